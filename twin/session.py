"""How long a command of unknown age may have waited for the bridge in the broker.

The bridge keeps a persistent MQTT session, so QoS 1 commands published while it restarts are
delivered when it is back. A command without ``issued_at`` (a plain ``LOCK`` from Home Assistant,
a script's ``mosquitto_pub``) carries no age of its own, and one that waited in the session for
longer than its expiry must not run. What the bridge can know:

- **when it was last live**: while connected (and past its backlog, below) it records the time in
  its store once a second (``meta.live_at``), so after a crash, a stop or a lost connection the
  store says since when, at the earliest, a message may have waited for it;
- **whether the broker kept a session** (CONNACK ``session present``): without one nothing waited;
- **where the backlog ends**: right after connecting, the bridge publishes a marker to a topic only
  it subscribes to; the broker queues it behind every message it held for the session, so whatever
  arrives before the marker may come from the backlog, and whatever arrives after it is live.
  This relies on the broker delivering a session's queued messages in order, across topics, as
  mosquitto does (one queue per client; ``tests/test_unknown_age.py`` proves it end to end).

A command that arrives before the marker is therefore counted as issued at ``live_at`` (the
earliest it could have been published): it is refused ``EXPIRED`` when the bridge was away longer
than its expiry, and otherwise runs with what is left of it (:func:`twin.intake.expiry`).
"""

from __future__ import annotations

import logging
import time
import uuid

from twin.store import StoreUnavailable, TwinStore

__all__ = ["SessionClock"]

log = logging.getLogger(__name__)

_LIVE_AT = "live_at"


class SessionClock:
    def __init__(self, *, store: TwinStore, marker_topic: str) -> None:
        self.store = store
        self.marker_topic = marker_topic
        self._marker: bytes | None = None
        self._backlog_since: float | None = None
        self._live = False

    @property
    def queued_since(self) -> float | None:
        """While the session's backlog may still be arriving: since when it may have waited (epoch
        seconds; -inf when the bridge was never recorded live); None once messages arrive live."""
        return self._backlog_since

    @property
    def live(self) -> bool:
        return self._live

    def connected(self, *, session_present: bool) -> bytes | None:
        """A connection is up; returns the marker to publish on :attr:`marker_topic` (None: nothing
        can have waited, since the broker kept no session)."""
        if not session_present:
            self._go_live()
            return None
        recorded = self.store.meta(_LIVE_AT)
        self._backlog_since = float(recorded) if recorded is not None else float("-inf")
        self._live = False
        self._marker = uuid.uuid4().hex.encode()
        return self._marker

    def on_marker(self, payload: bytes) -> None:
        if self._marker is not None and payload == self._marker:
            self._go_live()

    def disconnected(self) -> None:
        self._live = False
        self._marker = None
        self._backlog_since = None

    def heartbeat(self, now: float | None = None) -> None:
        """Record that the bridge is live now (the owner calls this once a second, and at a clean stop)."""
        if self._live:
            try:
                with self.store.transaction():
                    self.store.set_meta(_LIVE_AT, repr(time.time() if now is None else now))
            except StoreUnavailable:
                pass  # a full disk: the last beat stands, which only makes the rule stricter

    def _go_live(self) -> None:
        self._live = True
        self._marker = None
        self._backlog_since = None
        self.heartbeat()
