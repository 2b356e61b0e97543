"""The publisher drops nothing while connected (a fleet's republish at start is larger than its
limit) and keeps only the newest ``limit`` messages while the broker is away."""

from __future__ import annotations

from twin.publisher import Publisher


def test_outbox_limits_only_while_disconnected() -> None:
    publisher = Publisher(window=0, limit=3)
    publisher._paho = object()  # type: ignore[assignment]  # connected, window full: everything waits
    for i in range(10):
        publisher.send(f"t/{i}", b"x", retain=True)
    assert [m.topic for m in publisher.outbox] == [f"t/{i}" for i in range(10)]
    publisher.detach()  # the broker went away: only the newest ``limit`` are kept
    assert [m.topic for m in publisher.outbox] == ["t/7", "t/8", "t/9"]
    publisher.send("t/10", b"x", retain=True)
    assert [m.topic for m in publisher.outbox] == ["t/8", "t/9", "t/10"]
