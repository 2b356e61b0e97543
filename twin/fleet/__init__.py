"""The fleet service (``locktwin fleet``): query, jobs and zones across vendors, and a GBFS feed.

It speaks only the MQTT contract: it follows every vendor's and shard's retained ``state``,
``twin`` and device lists, and sends ``/set`` and ``/request/...`` like any client. Modules:

- :mod:`twin.fleet.index`, :mod:`twin.fleet.query`, :mod:`twin.fleet.search`: the live index and
  its filter language;
- :mod:`twin.fleet.jobs`, :mod:`twin.fleet.runner`, :mod:`twin.fleet.schedule`,
  :mod:`twin.fleet.commands`: jobs, their rollout and the commands they send;
- :mod:`twin.fleet.geo`, :mod:`twin.fleet.zones`, :mod:`twin.fleet.rules`: zones, their events and
  the keep-locked rule;
- :mod:`twin.fleet.gbfs`: the GBFS v3.0 feed; :mod:`twin.fleet.http`: the HTTP API;
- :mod:`twin.fleet.service`: the process; :mod:`twin.fleet.client`, :mod:`twin.fleet.cli`: the CLI;
- :mod:`twin.fleet.store`, :mod:`twin.fleet.settings`, :mod:`twin.fleet.clock`, :mod:`twin.fleet.mqtt`.

Nothing is imported here (``twin.config`` imports the settings module), so each module is imported
by its own name.
"""

__all__: list[str] = []
