"""One instance on the PostgreSQL store, in-process, over a real mosquitto and a fresh database
(twin.cluster): when its store connection breaks (the server ends it), every partition ends, the
instance joins again as a new member and serves its devices from the store, and a command sent
while it was down gets exactly one final answer, with one vendor call."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import REGISTRY

from contracts.messages import EventType, LockState
from tests.fake_adapter import FakeAdapter, FakeSettings
from tests.faults import pg
from twin.adapter import CommandContext, ExecuteResult, ReportedPatch
from twin.cluster import ClusterRuntime
from twin.config import ClusterSettings
from twin.partitions import forwarded_patch
from twin.pgschema import schema_for
from twin.testing import FINAL, BridgeHarness

pytestmark = pytest.mark.anyio


class ClusterHarness(BridgeHarness):
    """The harness's observer and helpers around a :class:`ClusterRuntime` instead of a lone bridge."""

    def __init__(self, *, store_url: str, instance: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store_url = store_url
        self.instance = instance

    def new_runtime(self) -> ClusterRuntime:  # type: ignore[override]
        return ClusterRuntime(
            adapter=self.adapter,
            mqtt=self._mqtt(),
            store_url=self.store_url,
            store_password=None,
            data_dir=self.data_dir,
            base_topic=self.base,
            options=self.options,
            cluster=ClusterSettings(instance=self.instance, partitions=4, lease_seconds=4),
            homeassistant=self.homeassistant,
        )


async def test_a_broken_store_connection_ends_the_partitions_and_the_instance_serves_again(
    mqtt_broker: str, tmp_path: Path
) -> None:
    pg.require()
    adapter = FakeAdapter()
    instance = f"solo-{uuid.uuid4().hex[:6]}"
    with pg.fresh_database() as url:
        async with ClusterHarness(
            adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, store_url=url, instance=instance
        ) as h:
            runtime = h.runtime
            assert isinstance(runtime, ClusterRuntime)
            await h.wait_for(lambda: h.retained.get(f"{h.base}/bridge/fake/state") == b"online", timeout=20)
            first = await h.set("d1", {"lock": "UNLOCKED"})
            assert first["status"] == "succeeded" and runtime.joins == 1
            with psycopg.connect(url, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE %s",
                    (f"locktwin {instance}#%",),
                ).fetchall()
            assert ended[0][0] >= 1
            # sent while the instance finds out and joins again: taken in by the next intake session
            second = await h.set("d2", {"lock": "UNLOCKED"}, timeout=30)
            assert second["status"] == "succeeded"
            assert runtime.joins == 2  # the broken connection ended that member run
            finals = [
                r for r in h.responses("d2") if r["transaction"] == second["transaction"] and r["status"] in FINAL
            ]
            assert len(finals) == 1
            assert adapter.calls == [("d1", "unlock"), ("d2", "unlock")]
            await h.wait_for(lambda: len(runtime.partitions) == 4, timeout=10)
            third = await h.set("d1", {"lock": "LOCKED"})  # served from the store by the new member
            assert third["status"] == "succeeded"


async def test_a_command_whose_inbox_commit_is_lost_is_never_sent(mqtt_broker: str, tmp_path: Path) -> None:
    """The inbox hands a row to the engine inside the transaction that consumes it; when that
    commit is lost, nothing of the command may stay in memory: no worker, no vendor call."""
    pg.require()
    adapter = FakeAdapter()
    with pg.fresh_database() as url:
        async with ClusterHarness(
            adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, store_url=url, instance="one"
        ) as h:
            runtime = h.runtime
            assert isinstance(runtime, ClusterRuntime)
            await h.wait_for(lambda: runtime.serving("d1") is not None, timeout=20)
            part = runtime.serving("d1")
            assert part is not None
            inbound = runtime.topics.parse(h.topic("d1", "set"))
            assert inbound is not None
            with pytest.raises(RuntimeError), part.store.transaction():
                await part.engine.handle(
                    inbound, b'{"lock": "UNLOCKED", "transaction": "lost"}', retained=False, reply=None
                )
                raise RuntimeError("the commit is lost")
            assert part.store.command_by_transaction("d1", "lost") is None
            again = await h.set("d1", {"lock": "UNLOCKED", "transaction": "lost"})  # the client tries again
            # one device's commands run in order: a worker left with the lost one would have sent it first
            assert again["status"] == "succeeded" and adapter.calls == [("d1", "unlock")]


class _Witness(FakeAdapter):
    """Reads, on a connection of its own, what the store holds of each command when it is called."""

    def __init__(self, url: str, schema: str) -> None:
        super().__init__(settings=FakeSettings(devices=[f"d{n}" for n in range(12)]))
        self.url, self.schema = url, schema
        self.seen: list[str] = []

    async def lock(self, device_id: str, *, locked: bool, ctx: CommandContext) -> ExecuteResult:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                f'SELECT status FROM "{self.schema}".commands WHERE id = %s',
                (ctx.command_id,),
            ).fetchone()
        self.seen.append("missing" if row is None else str(row[0]))
        return await super().lock(device_id, locked=locked, ctx=ctx)


async def test_a_command_is_durable_as_sent_before_its_vendor_call(mqtt_broker: str, tmp_path: Path) -> None:
    """Commits leave the event loop (twin.pgwriter): the engine waits for the ``sent`` step's before
    it calls the vendor, so a crash after the call never finds the command as not yet sent. A burst
    of commands shares commits."""
    pg.require()
    with pg.fresh_database() as url:
        base = f"lt{uuid.uuid4().hex[:6]}"
        adapter = _Witness(url, schema_for(base, "fake"))
        async with ClusterHarness(
            adapter=adapter, broker_url=mqtt_broker, data_dir=tmp_path, store_url=url, instance="one", base_topic=base
        ) as h:
            runtime = h.runtime
            assert isinstance(runtime, ClusterRuntime)
            await h.wait_for(lambda: len(runtime.partitions) == 4 and runtime.intake is not None, timeout=20)
            assert runtime.db is not None
            writer = runtime.db.writer
            before = (writer.groups, writer.committed)
            async with anyio.create_task_group() as tg:
                for device in adapter.locks:
                    tg.start_soon(h.set, device, {"lock": "UNLOCKED"})
            assert adapter.seen == ["sent"] * len(adapter.locks)
            groups, committed = writer.groups - before[0], writer.committed - before[1]
            assert committed > groups  # several engine transactions went in one commit


def _forwarded(sent_or_taken: str) -> float:
    return REGISTRY.get_sample_value("locktwin_pushes_forwarded_total", {"vendor": "fake", "stage": sent_or_taken}) or 0


def test_a_forwarded_patch_keeps_no_secret_and_is_dated_on_arrival() -> None:
    before = datetime.now(UTC)
    body = forwarded_patch(ReportedPatch(values={"battery": 40, "secret_key": "s3cr3t-value"}), FakeAdapter())
    patch = ReportedPatch.model_validate_json(body)
    assert "s3cr3t" not in body and patch.values == {"battery": 40}
    assert patch.observed_at is not None and before <= patch.observed_at <= datetime.now(UTC)


async def test_a_push_that_reaches_another_instance_is_applied_by_the_devices_owner(
    mqtt_broker: str, tmp_path: Path
) -> None:
    """A webhook behind a load balancer reaches any instance: one that does not serve the device
    stores the push for its owner (the ``forwarded`` table), answers only once that is durable, and
    the owner applies it under the same watermarks as its own (a late push changes nothing). When
    the owner stops, what is forwarded meanwhile is applied by the partition's next owner."""
    pg.require()
    settings = FakeSettings(devices=[f"d{n}" for n in range(8)])
    first, second = FakeAdapter(settings=settings), FakeAdapter(settings=settings)
    base = f"lt{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    with pg.fresh_database() as url:
        common: dict[str, Any] = {"broker_url": mqtt_broker, "store_url": url, "base_topic": base}
        async with ClusterHarness(adapter=first, data_dir=tmp_path / "a", instance="a", **common) as a:
            ra = a.runtime
            assert isinstance(ra, ClusterRuntime)
            await a.wait_for(lambda: len(ra.partitions) == 4, timeout=20)
            async with ClusterHarness(adapter=second, data_dir=tmp_path / "b", instance="b", **common) as b:
                rb = b.runtime
                assert isinstance(rb, ClusterRuntime)
                await a.wait_for(lambda: len(ra.partitions) == 2 and len(rb.partitions) == 2, timeout=20)
                device = next(d for d in settings.devices if rb.serving(d) is not None)
                assert ra.serving(device) is None and first.sink is not None
                sent, taken = _forwarded("sent"), _forwarded("taken")

                pushed = ReportedPatch(
                    values={"lock": LockState.UNLOCKED, "secret_key": "s3cr3t-value"}, observed_at=now
                )
                assert await first.sink.report(device, pushed, source="push")
                await a.wait_retained(device, "state", lambda s: s["lock"] == "UNLOCKED")
                part = rb.serving(device)
                assert part is not None and "secret_key" not in part.engine.twins[device].reported
                # a late copy of an older observation, then an alert: applied in order, the first changes nothing
                late = ReportedPatch(values={"lock": LockState.LOCKED}, observed_at=now - timedelta(minutes=5))
                assert await first.sink.report(device, late, source="push")
                await first.sink.event(device, EventType.ALERT, {"alarm": "tilt"})
                await a.wait_for(lambda: any(e["data"].get("alarm") == "tilt" for e in a.events(device, "alert")))
                assert part.engine.twins[device].reported["lock"] == "UNLOCKED"
                assert not await first.sink.report("nowhere", pushed, source="push")  # not a listed device
                assert _forwarded("sent") - sent == 3
                assert _forwarded("taken") - taken == 3

                await b.stop_bridge()  # its partitions go to the first instance
                relock = ReportedPatch(values={"lock": LockState.LOCKED}, observed_at=datetime.now(UTC))
                assert await first.sink.report(device, relock, source="push")  # forwarded or applied
                await a.wait_retained(device, "state", lambda s: s["lock"] == "LOCKED", timeout=20)
                assert ra.serving(device) is not None
        with psycopg.connect(url, autocommit=True) as admin:
            left = admin.execute(f'SELECT count(*) FROM "{schema_for(base, "fake")}".forwarded').fetchone()
        assert left == (0,)


async def test_home_assistant_discovery_is_announced_by_each_devices_owner(mqtt_broker: str, tmp_path: Path) -> None:
    """Each instance announces the devices it serves (on connecting, on adopting a partition, and
    again when Home Assistant says it is online); together they announce every device, and the
    configs' topics drive the devices whoever serves them."""
    pg.require()
    settings = FakeSettings(devices=[f"d{n}" for n in range(8)])
    base = f"lt{uuid.uuid4().hex[:6]}"

    def config(h: BridgeHarness, device: str) -> str:
        return f"{h.base}/homeassistant/lock/locktwin_fake/{device}/config"

    def announced(h: BridgeHarness, device: str) -> int:
        return sum(1 for t, p, *_ in h.messages if t == config(h, device) and p)

    with pg.fresh_database() as url:
        common: dict[str, Any] = {"broker_url": mqtt_broker, "store_url": url, "base_topic": base}
        async with ClusterHarness(
            adapter=FakeAdapter(settings=settings), data_dir=tmp_path / "a", instance="a", **common
        ) as a:
            ra = a.runtime
            assert isinstance(ra, ClusterRuntime)
            async with ClusterHarness(
                adapter=FakeAdapter(settings=settings), data_dir=tmp_path / "b", instance="b", **common
            ) as b:
                rb = b.runtime
                assert isinstance(rb, ClusterRuntime)
                await a.wait_for(lambda: len(ra.partitions) == 2 and len(rb.partitions) == 2, timeout=20)
                await a.wait_for(lambda: all(announced(a, d) for d in settings.devices))
                bridge = f"{base}/homeassistant/binary_sensor/locktwin_bridge_fake/connectivity/config"
                assert json.loads(a.retained[bridge])["state_topic"] == f"{base}/bridge/fake/state"
                lock = json.loads(a.retained[config(a, "d0")])
                assert lock["command_topic"] == a.topic("d0", "set")
                before = {d: announced(a, d) for d in settings.devices}
                await a.publish(f"{base}/homeassistant/status", "online")  # Home Assistant restarted
                await a.wait_for(lambda: all(announced(a, d) > before[d] for d in settings.devices))
                device = next(d for d in settings.devices if rb.serving(d) is not None)
                await b.stop_bridge()
            await a.wait_for(lambda: ra.serving(device) is not None, timeout=20)
            await a.publish(json.loads(a.retained[config(a, device)])["command_topic"], "UNLOCK")  # HA's payload
            await a.wait_retained(device, "state", lambda s: s["lock"] == "UNLOCKED")
