"""A faithful simulator of the Segway Discovery cloud (``python -m bridges.segway.simulator``)."""

from __future__ import annotations

from bridges.segway.simulator.core import Call, SegwaySimulator
from bridges.segway.simulator.fleet import Fleet, Vehicle
from bridges.segway.simulator.pusher import PushRecord, sign_push

__all__ = ["DEMO_CLIENT_SECRET", "Call", "Fleet", "PushRecord", "SegwaySimulator", "Vehicle", "sign_push"]

#: the demo's and compose's simulator credential: public, fixed so a bridge in another process can use it
DEMO_CLIENT_SECRET = "segway-demo-secret-not-a-secret"  # noqa: S105
