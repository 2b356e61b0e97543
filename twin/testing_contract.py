"""The contract every adapter of the registry passes, over a real mosquitto and real HTTP.

As every MQTT platform of Home Assistant passes the shared tests of its ``test_common.py``, every
adapter of :data:`twin.registry.ADAPTERS` passes the tests here: one test module
(``tests/test_vendor_contract.py``) collects them, parametrized by vendor. A vendor brings its
:class:`VendorKit`, a class named ``Kit`` in ``bridges/<vendor>/tests/kit.py`` (its folder's
``tests`` package, beside the adapter's module), which serves the vendor's simulator on a real
socket, configures an adapter for it, names a device and has switches for an offline device, a
cloud that hangs, a rate limit (HTTP 429) and a server error (HTTP 5xx), each the way that vendor
says so on the wire. A vendor in the registry without a kit fails every test here, saying where
the kit goes.

What every adapter shows, through a bridge (:class:`~twin.testing.BridgeHarness`):

- a lock and an unlock end ``succeeded`` only after a state the vendor reported, read after it
  accepted the command, matched (and the simulated bolt moved);
- a command for an offline device is retried and ends ``expired``;
- a server error is retried with growing waits, then the command succeeds;
- a rate limit is retried no sooner than the vendor's ``Retry-After``, then the command succeeds;
- a call the vendor left unanswered is never answered ``expired`` (it may have been carried out);
- bad arguments of every action and every desired field are refused before any vendor call
  (counted at the simulator);
- after every test, no topic the bridge published carries a secret of the kit (credentials, tokens,
  full card ids).
"""

from __future__ import annotations

import functools
import importlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from twin.adapter import Adapter
from twin.config import BridgeOptions
from twin.registry import ADAPTERS
from twin.testing import BridgeHarness, json_or_text

__all__ = [
    "OPTIONS",
    "VendorKit",
    "bad_requests",
    "kit",
    "kit_module",
    "load_kit",
    "test_a_call_left_unanswered_is_never_answered_expired",
    "test_a_command_without_time_to_reach_the_vendor_is_not_sent",
    "test_bad_arguments_are_refused_before_any_vendor_call",
    "test_lock_and_unlock_are_confirmed_by_reported_state",
    "test_no_secret_on_any_topic",
    "test_offline_device_is_retried_then_expires",
    "test_rate_limit_is_retried_after_the_vendors_wait",
    "test_server_errors_are_retried_with_backoff_then_succeed",
]

#: the bridge's options in the suite: quick retries, so that retried commands take tenths of a second
OPTIONS = BridgeOptions(retry_base=0.1, retry_cap=1.0)
#: a command's time in the tests that end before it runs out
EXPIRES_IN = 10.0


class VendorKit(ABC):
    """What a vendor brings to the suite. The constructor builds its simulator (with a device that
    starts locked, bolt times of zero where it allows); :meth:`serve` serves it. Each test gets a
    kit of its own."""

    vendor: ClassVar[str]
    #: the simulated device the tests command
    device: str

    @abstractmethod
    def serve(self) -> AbstractAsyncContextManager[Adapter[Any]]:
        """Serve the simulator on a real socket; yield an adapter configured for it, not started
        (the bridge starts it), polling off (the tests count calls) and its HTTP timeouts short."""

    @abstractmethod
    def locked(self) -> bool:
        """Whether the simulated device's bolt is locked now."""

    @abstractmethod
    def offline(self, offline: bool) -> None:
        """Take the device off the vendor's network (it answers "offline"), or bring it back."""

    @abstractmethod
    def hang(self, seconds: float) -> None:
        """From now on every answer of the vendor's cloud takes ``seconds`` (0: answers at once)."""

    @abstractmethod
    def rate_limit(self, *, times: int, retry_after: float) -> None:
        """The next ``times`` calls are refused as over the rate limit (HTTP 429, or the vendor's own
        way of saying it), with ``Retry-After: retry_after`` where the vendor sends one."""

    @abstractmethod
    def server_error(self, *, times: int) -> None:
        """The next ``times`` calls fail with an HTTP 5xx from the vendor's servers."""

    @abstractmethod
    def calls(self) -> int:
        """How many requests the simulator has received."""

    @abstractmethod
    def secrets(self) -> Iterable[str]:
        """What must never appear on a topic: credentials, tokens issued so far, full card ids."""

    async def exercise(self, bridge: BridgeHarness) -> None:
        """Commands of this vendor's own that carry something secret (cards), for the secrets test;
        by default none."""
        return None


def kit_module(vendor: str) -> str:
    """Where a vendor's kit lives: the ``tests.kit`` module of its adapter's package."""
    module = ADAPTERS[vendor].partition(":")[0]
    return f"{module.rpartition('.')[0]}.tests.kit"


def load_kit(vendor: str) -> VendorKit:
    """A new kit of ``vendor``; fails the test, saying what is missing, when the vendor has none."""
    name = kit_module(vendor)
    where = name.replace(".", "/") + ".py"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise  # the kit is there; something it imports is not
        pytest.fail(
            f"{vendor!r} is in twin.registry.ADAPTERS but brings no contract kit: add {where} with a class "
            f"`Kit`, a twin.testing_contract.VendorKit (simulator, device, switches), so that the vendor "
            f"contract suite can run against it",
            pytrace=False,
        )
    kit_class = getattr(module, "Kit", None)
    if not (isinstance(kit_class, type) and issubclass(kit_class, VendorKit)):
        pytest.fail(f"{where} has no class `Kit` that is a twin.testing_contract.VendorKit", pytrace=False)
    if kit_class.vendor != vendor:
        pytest.fail(f"{where}: Kit.vendor is {kit_class.vendor!r}, not {vendor!r}", pytrace=False)
    return kit_class()


@pytest.fixture(params=sorted(ADAPTERS))
def kit(request: pytest.FixtureRequest) -> VendorKit:
    """A kit of each vendor of the registry."""
    return load_kit(request.param)


@asynccontextmanager
async def _bridge(kit: VendorKit, broker_url: str, data_dir: Path, **options: Any) -> AsyncIterator[BridgeHarness]:
    """A bridge of the kit's adapter on its served simulator; after the test, nothing it
    published may carry a secret of the kit."""
    async with kit.serve() as adapter:
        bridge_options = OPTIONS.model_copy(update=options)
        harness = BridgeHarness(adapter=adapter, broker_url=broker_url, data_dir=data_dir, options=bridge_options)
        async with harness as h:
            yield h
            _assert_no_secret(h, kit)


def _published(h: BridgeHarness) -> Iterator[tuple[str, bytes]]:
    """What the bridge published (everything the harness saw but the commands it was sent)."""
    assert h.runtime is not None
    for topic, payload, _, _ in h.messages:
        if h.runtime.topics.parse(topic) is None:
            yield topic, payload


def _assert_no_secret(h: BridgeHarness, kit: VendorKit) -> None:
    secrets = [s for s in kit.secrets() if len(s) >= 4]
    assert secrets, f"the {kit.vendor} kit names no secret to look for"
    for topic, payload in _published(h):
        text = topic + "\n" + payload.decode(errors="replace")
        for n, secret in enumerate(secrets):
            # the message says which, never the secret itself
            assert secret not in text, f"secret #{n} of the {kit.vendor} kit ({len(secret)} characters) on {topic}"


def _command_events(h: BridgeHarness, device: str, transaction: str) -> list[dict[str, Any]]:
    return [e for e in h.events(device, "command") if e["data"]["transaction"] == transaction]


def _retries(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float | None]]:
    """Each retry (sent -> accepted, with its error) and the seconds until the next attempt went out
    (None: the command ended first)."""
    out: list[tuple[dict[str, Any], float | None]] = []
    for n, event in enumerate(events):
        step = event["data"]
        if step["from"] == "sent" and step["to"] == "accepted":
            after = next((e for e in events[n + 1 :] if e["data"]["to"] == "sent"), None)
            waited = None
            if after is not None:
                waited = (datetime.fromisoformat(after["at"]) - datetime.fromisoformat(event["at"])).total_seconds()
            out.append((step["error"], waited))
    return out


def _first(seen: list[tuple[str, Any]], topic: str, match: Callable[[dict[str, Any]], bool]) -> int:
    """The index of the first message on ``topic`` that ``match`` es (``len(seen)``: none)."""
    found = (n for n, (t, doc) in enumerate(seen) if t == topic and isinstance(doc, dict) and match(doc))
    return next(found, len(seen))


async def _set_confirmed(h: BridgeHarness, device: str, target: str) -> None:
    """``/set`` the lock to ``target``: succeeded, and in this order: the vendor accepted it, a state
    it reported showed ``target``, the answer came."""
    mark = len(h.messages)
    final = await h.set(device, {"lock": target, "expires_in": EXPIRES_IN})
    assert final["status"] == "succeeded", final
    seen = [(t, json_or_text(p)) for t, p, _, _ in h.messages[mark:]]

    def acknowledged(event: dict[str, Any]) -> bool:
        step = event["data"]
        return (event["type"], step["transaction"], step["to"]) == ("command", final["transaction"], "acknowledged")

    accepted_at = _first(seen, h.topic(device, "event"), acknowledged)
    shown_at = _first(seen, h.topic(device, "state"), lambda state: state["lock"] == target)
    answered_at = _first(seen, h.topic(device, "response/set"), lambda answer: answer == final)
    # never an optimistic state: nothing shows the target before the vendor took the command
    assert accepted_at < shown_at < answered_at < len(seen), (accepted_at, shown_at, answered_at)
    twin = h.retained_json(device, "twin")
    assert twin["reported"]["lock"] == target
    assert twin["metadata"]["lock"]["source"] in {"confirm", "command", "push", "poll"}, twin["metadata"]


@pytest.mark.anyio
async def test_lock_and_unlock_are_confirmed_by_reported_state(
    kit: VendorKit, mqtt_broker: str, tmp_path: Path
) -> None:
    assert kit.locked(), "a kit's device starts locked"
    async with _bridge(kit, mqtt_broker, tmp_path) as h:
        await _set_confirmed(h, kit.device, "UNLOCKED")
        assert not kit.locked(), "the simulated bolt did not move"
        await _set_confirmed(h, kit.device, "LOCKED")
        assert kit.locked(), "the simulated bolt did not move"


@pytest.mark.anyio
async def test_offline_device_is_retried_then_expires(kit: VendorKit, mqtt_broker: str, tmp_path: Path) -> None:
    device = kit.device
    async with _bridge(kit, mqtt_broker, tmp_path) as h:
        kit.offline(True)
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": 1.5})
        assert final["status"] == "expired", final
        assert final["error"]["code"] == "EXPIRED"
        retries = _retries(_command_events(h, device, final["transaction"]))
        assert len(retries) >= 1, "an offline device is tried again until the command expires"
        assert all(error["code"] == "DEVICE_OFFLINE" and error["retryable"] for error, _ in retries), retries
        await h.wait_retained(device, "availability", lambda a: a == "offline")
        assert kit.locked(), "an offline device never moved"


@pytest.mark.anyio
async def test_server_errors_are_retried_with_backoff_then_succeed(
    kit: VendorKit, mqtt_broker: str, tmp_path: Path
) -> None:
    device = kit.device
    async with _bridge(kit, mqtt_broker, tmp_path) as h:
        kit.server_error(times=2)
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": EXPIRES_IN})
        assert final["status"] == "succeeded", final
        retries = _retries(_command_events(h, device, final["transaction"]))
        assert len(retries) == 2, retries
        for attempt, (error, waited) in enumerate(retries, start=1):
            assert error["code"] == "VENDOR_UNAVAILABLE" and error["retryable"], error
            # jittered exponential backoff: at least half of base x 2^(attempt-1) (1 ms: timestamps)
            least = 0.5 * OPTIONS.retry_base * 2 ** (attempt - 1)
            assert waited is not None and waited >= least - 0.001, (attempt, waited)
        assert not kit.locked()


@pytest.mark.anyio
async def test_rate_limit_is_retried_after_the_vendors_wait(kit: VendorKit, mqtt_broker: str, tmp_path: Path) -> None:
    device = kit.device
    async with _bridge(kit, mqtt_broker, tmp_path) as h:
        kit.rate_limit(times=1, retry_after=0.4)
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": EXPIRES_IN})
        assert final["status"] == "succeeded", final
        [(error, waited)] = _retries(_command_events(h, device, final["transaction"]))
        assert error["code"] == "RATE_LIMITED" and error["retryable"], error
        assert waited is not None
        if error["retry_after"] is not None:  # the vendor said how long (Tuya's envelope does not)
            assert waited >= error["retry_after"] - 0.001, (error, waited)
        assert not kit.locked()


@pytest.mark.anyio
async def test_a_call_left_unanswered_is_never_answered_expired(
    kit: VendorKit, mqtt_broker: str, tmp_path: Path
) -> None:
    device = kit.device
    async with _bridge(kit, mqtt_broker, tmp_path, call_timeout=0.3) as h:
        kit.hang(0.8)
        # a second of life past the time a call needs left to start (the vendor's send margin)
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": 1.0 + h.adapter.send_margin})
        kit.hang(0.0)
        # "expired" promises the vendor never got it; a call without an answer may have been carried out
        assert final["status"] == "failed", final
        assert final["error"]["code"] == "NOT_CONFIRMED", final


@pytest.mark.anyio
async def test_a_command_without_time_to_reach_the_vendor_is_not_sent(
    kit: VendorKit, mqtt_broker: str, tmp_path: Path
) -> None:
    device = kit.device
    margin = 0.5  # above any bridge's own delay between accepting a command and calling the vendor
    async with _bridge(kit, mqtt_broker, tmp_path, send_margin=margin) as h:
        before = kit.calls()
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": margin / 2})
        # it would reach the vendor after its expiry: "expired", the promise that the vendor never got it
        assert (final["status"], final["error"]["code"]) == ("expired", "EXPIRED"), final
        assert kit.calls() == before
        assert kit.locked()


@pytest.mark.anyio
async def test_bad_arguments_are_refused_before_any_vendor_call(
    kit: VendorKit, mqtt_broker: str, tmp_path: Path
) -> None:
    device = kit.device
    async with _bridge(kit, mqtt_broker, tmp_path) as h:
        requests = bad_requests(h.adapter)
        before = kit.calls()
        sent = []
        for leaf, suffix, body in requests:
            transaction = f"t-bad-{uuid.uuid4().hex[:12]}"
            await h.publish(h.topic(device, leaf), {**body, "transaction": transaction})
            sent.append((suffix, body, transaction))
        for suffix, body, transaction in sent:
            final = await h.final(device, transaction, suffix)
            assert (final["status"], final["error"]["code"]) == ("rejected", "INVALID_PAYLOAD"), (suffix, body, final)
        assert kit.calls() == before, f"{kit.calls() - before} vendor calls for commands that were refused"
        assert {suffix for suffix, _, _ in sent} == {"set", *h.adapter.actions()}


#: wrong values, those a constraint refuses (ranges, patterns, choices) before those of a wrong type
_WRONG: tuple[Any, ...] = (-(10**15), 10**15, "not this", 0.5, "", True, None, ["not", "this"], {"not": ["this"]})


def _wrong_values(accepts: Callable[[Any], bool], schema: Any = None) -> list[Any]:
    """The first value a field refuses (just past a bound of its JSON schema, if it has one) and,
    if another, the last (most often one of a wrong type); none for a field that takes anything."""
    refused = [value for value in (*_past_bounds(schema), *_WRONG) if not accepts(value)]
    return refused[:1] + refused[1:][-1:]


def _past_bounds(schema: Any) -> Iterator[Any]:
    """Values just outside the bounds a JSON schema (and its ``anyOf`` branches) declares."""
    if isinstance(schema, list):
        for item in schema:
            yield from _past_bounds(item)
    if not isinstance(schema, dict):
        return
    step = 1 if schema.get("type") == "integer" else 0.5
    if "maximum" in schema:
        yield schema["maximum"] + step
    if "minimum" in schema:
        yield schema["minimum"] - step
    for key in ("exclusiveMaximum", "exclusiveMinimum"):
        if key in schema:
            yield schema[key]
    if "maxLength" in schema:
        yield "x" * (schema["maxLength"] + 1)
    yield from _past_bounds(schema.get("anyOf"))


def _takes(model: type[BaseModel], key: str, value: Any) -> bool:
    """Whether ``model`` takes ``value`` as ``key`` (other fields missing do not count)."""
    try:
        model.model_validate({key: value})
    except ValidationError as exc:
        return not any(error["loc"][:1] == (key,) for error in exc.errors())
    return True


def bad_requests(adapter: Adapter[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic leaf, response suffix, payload) of commands the bridge must refuse: for every action, a
    bad envelope, its required arguments missing, and wrong values of each argument (found by its
    own model: out of range or pattern first, then of a wrong type); for ``/set``, wrong values of
    each desired field, an unknown field and a bad envelope."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for name, field in adapter.desired_fields().items():
        adapter_of = TypeAdapter(field.type)
        for value in _wrong_values(functools.partial(_validates, adapter_of)):
            out.append(("set", "set", {name: value}))
    out.append(("set", "set", {"no_such_field": 1}))
    out.append(("set", "set", {"lock": "LOCKED", "expires_in": -1}))
    for name, spec in adapter.actions().items():
        leaf = f"request/{name}"
        out.append((leaf, name, {"expires_in": -1}))
        model = spec.arguments
        if not _validates(TypeAdapter(model), {}):
            out.append((leaf, name, {}))
        for key, schema in model.model_json_schema(by_alias=True).get("properties", {}).items():
            for value in _wrong_values(functools.partial(_takes, model, key), schema):
                out.append((leaf, name, {key: value}))
    return out


def _validates(adapter: TypeAdapter[Any], value: Any) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.anyio
async def test_no_secret_on_any_topic(kit: VendorKit, mqtt_broker: str, tmp_path: Path) -> None:
    device = kit.device
    async with _bridge(kit, mqtt_broker, tmp_path) as h:
        final = await h.set(device, {"lock": "UNLOCKED", "expires_in": EXPIRES_IN})
        assert final["status"] == "succeeded", final
        read = await h.get(device)
        assert read["status"] == "succeeded", read
        await kit.exercise(h)
        # the check itself runs as the bridge stops, as after every test of the suite
