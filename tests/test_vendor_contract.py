"""The vendor contract suite (twin.testing_contract), collected here for every adapter of the registry.

Each test of the suite runs once per vendor of twin.registry.ADAPTERS, with the kit of that vendor's
folder; a vendor without a kit fails them all, saying where its kit goes (the test below checks that).
"""

from __future__ import annotations

import pytest

from twin import registry

# the suite's fixture (``kit``) and tests, collected here: the names are the suite's __all__
from twin.testing_contract import *  # noqa: F403
from twin.testing_contract import load_kit


def test_a_vendor_without_a_kit_fails_the_suite_saying_where_it_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.ADAPTERS, "newvendor", "bridges.newvendor.adapter:NewVendorAdapter")
    with pytest.raises(pytest.fail.Exception) as failed:
        load_kit("newvendor")
    message = str(failed.value)
    assert "'newvendor' is in twin.registry.ADAPTERS but brings no contract kit" in message
    assert "bridges/newvendor/tests/kit.py" in message
    assert "`Kit`" in message
