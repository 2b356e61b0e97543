"""The vendor contract suite (twin.testing_contract), collected here for every adapter of the registry.

Each test runs once per vendor of twin.registry.ADAPTERS, with the kit of that vendor's folder; a
vendor without a kit fails them all, saying where its kit goes (the last test here checks that).
"""

from __future__ import annotations

import pytest

from twin import registry
from twin.testing_contract import (
    kit,
    load_kit,
    test_a_call_left_unanswered_is_never_answered_expired,
    test_bad_arguments_are_refused_before_any_vendor_call,
    test_lock_and_unlock_are_confirmed_by_reported_state,
    test_no_secret_on_any_topic,
    test_offline_device_is_retried_then_expires,
    test_rate_limit_is_retried_after_the_vendors_wait,
    test_server_errors_are_retried_with_backoff_then_succeed,
)

__all__ = [
    "kit",
    "test_a_call_left_unanswered_is_never_answered_expired",
    "test_bad_arguments_are_refused_before_any_vendor_call",
    "test_lock_and_unlock_are_confirmed_by_reported_state",
    "test_no_secret_on_any_topic",
    "test_offline_device_is_retried_then_expires",
    "test_rate_limit_is_retried_after_the_vendors_wait",
    "test_server_errors_are_retried_with_backoff_then_succeed",
]


def test_a_vendor_without_a_kit_fails_the_suite_saying_where_it_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.ADAPTERS, "newvendor", "bridges.newvendor.adapter:NewVendorAdapter")
    with pytest.raises(pytest.fail.Exception) as failed:
        load_kit("newvendor")
    message = str(failed.value)
    assert "'newvendor' is in twin.registry.ADAPTERS but brings no contract kit" in message
    assert "bridges/newvendor/tests/kit.py" in message
    assert "`Kit`" in message
