"""A faithful simulator of the Segway Discovery cloud (``python -m bridges.segway.simulator``)."""

from __future__ import annotations

from bridges.segway.simulator.core import Call, SegwaySimulator
from bridges.segway.simulator.fleet import Fleet, Vehicle
from bridges.segway.simulator.pusher import PushRecord, sign_push

__all__ = ["Call", "Fleet", "PushRecord", "SegwaySimulator", "Vehicle", "sign_push"]
