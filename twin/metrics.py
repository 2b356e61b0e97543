"""Prometheus metrics of a bridge process (served when ``metrics_port`` is set).

| metric | labels | meaning |
|---|---|---|
| ``locktwin_commands_total`` | vendor, action, status | commands by final status |
| ``locktwin_vendor_call_seconds`` | vendor, operation, outcome | latency of vendor calls |
| ``locktwin_commands_in_flight`` | vendor | commands being executed or confirmed |
| ``locktwin_token_refreshes_total`` | vendor, outcome | access-token refreshes |
| ``locktwin_pushes_total`` | vendor, outcome | vendor pushes accepted or refused |
| ``locktwin_mqtt_reconnects_total`` | vendor | MQTT connections lost and retried |
| ``locktwin_poll_backoff_seconds`` | vendor | how long status reads wait, the vendor failing as a whole (0: not) |
| ``locktwin_poll_lag_seconds`` | vendor | how late the latest status read started after it was due |
| ``locktwin_publish_too_large_total`` | | messages not sent: larger than the broker's Maximum Packet Size |
| ``locktwin_observations_clamped_total`` | vendor | reported values dated too far ahead, counted as received now |
| ``locktwin_store_writable`` | vendor | 1 while the store takes writes, 0 while it cannot (a full disk) |
| ``locktwin_leases_held`` | vendor | partitions this instance holds (shared PostgreSQL store) |
| ``locktwin_leases_acquired_total`` | vendor, how | partitions taken: ``free``, taken over (``expired``, ``dead``) |
| ``locktwin_leases_lost_total`` | vendor | partitions lost before this instance gave them up |
| ``locktwin_vendor_call_limit`` | vendor | vendor calls allowed in flight now (the adaptive limit, twin.limiter) |
| ``locktwin_vendor_requests_total`` | vendor | HTTP requests sent to the vendor (what its quota counts) |
| ``locktwin_budget_remaining`` | vendor | requests left of the budget (0: spent or refused; NaN: none) |
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BUDGET_REMAINING",
    "CALL_LIMIT",
    "COMMANDS",
    "IN_FLIGHT",
    "LEASES_ACQUIRED",
    "LEASES_HELD",
    "LEASES_LOST",
    "OBSERVATIONS_CLAMPED",
    "POLL_BACKOFF",
    "POLL_LAG",
    "PUBLISH_TOO_LARGE",
    "PUSHES",
    "PUSHES_FORWARDED",
    "RECONNECTS",
    "STORE_WRITABLE",
    "TOKEN_REFRESHES",
    "VENDOR_CALL_SECONDS",
    "VENDOR_REQUESTS",
]

COMMANDS = Counter("locktwin_commands_total", "Commands by final status", ["vendor", "action", "status"])
VENDOR_CALL_SECONDS = Histogram(
    "locktwin_vendor_call_seconds",
    "Latency of vendor calls",
    ["vendor", "operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("locktwin_commands_in_flight", "Commands being executed or confirmed", ["vendor"])
TOKEN_REFRESHES = Counter("locktwin_token_refreshes_total", "Access-token refreshes", ["vendor", "outcome"])
PUSHES = Counter("locktwin_pushes_total", "Vendor pushes received", ["vendor", "outcome"])
RECONNECTS = Counter("locktwin_mqtt_reconnects_total", "MQTT connections lost and retried", ["vendor"])
POLL_BACKOFF = Gauge(
    "locktwin_poll_backoff_seconds", "How long status reads wait while the vendor fails as a whole", ["vendor"]
)
POLL_LAG = Gauge("locktwin_poll_lag_seconds", "How late the latest status read started after it was due", ["vendor"])
OBSERVATIONS_CLAMPED = Counter(
    "locktwin_observations_clamped_total",
    "Reported values whose vendor time was too far ahead of ours (counted as received now)",
    ["vendor"],
)
STORE_WRITABLE = Gauge(
    "locktwin_store_writable", "1 while the bridge's store takes writes, 0 while it cannot", ["vendor"]
)
PUBLISH_TOO_LARGE = Counter(
    "locktwin_publish_too_large_total", "Messages not sent: larger than the broker's Maximum Packet Size (MQTT 5)"
)
LEASES_HELD = Gauge("locktwin_leases_held", "Partitions this instance holds", ["vendor"])
LEASES_ACQUIRED = Counter(
    "locktwin_leases_acquired_total", "Partitions acquired: free, or taken over (expired, dead)", ["vendor", "how"]
)
PUSHES_FORWARDED = Counter(
    "locktwin_pushes_forwarded_total",
    "Vendor pushes for a device another instance serves: stored for it (sent), applied by its owner (taken)",
    ["vendor", "stage"],
)
LEASES_LOST = Counter("locktwin_leases_lost_total", "Partitions lost before this instance gave them up", ["vendor"])
CALL_LIMIT = Gauge("locktwin_vendor_call_limit", "Vendor calls allowed in flight now (adaptive)", ["vendor"])
VENDOR_REQUESTS = Counter("locktwin_vendor_requests_total", "HTTP requests sent to the vendor", ["vendor"])
BUDGET_REMAINING = Gauge(
    "locktwin_budget_remaining", "Vendor requests left of the budget this period (NaN: no budget)", ["vendor"]
)
