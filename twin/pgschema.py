"""The PostgreSQL schema of one vendor's shared store (issue 22), and the names of its locks.

The tables are the SQLite store's (``twins``, ``commands``, ``journal``, ``refusals``, ``meta``) with
a ``partition`` column where rows belong to a device, and the journal naming the instance and lease
epoch that wrote each entry; beside them ``leases`` (one row per partition, plus the intake at
:data:`INTAKE`), ``members`` (the live instances), ``lease_log`` (every acquisition, for audit and the
takeover metrics), ``inbox`` (commands taken from the intake session, waiting for the owner of
their device's partition) and ``forwarded`` (vendor pushes that reached an instance not serving
their device, waiting for its owner; added in place, so a schema of version 1 gets it too).

``fence(partition, owner, epoch)`` opens every write transaction: it takes the partition's advisory
lock shared and raises ``LKT01`` unless the lease still names this owner and epoch. A takeover takes
the same lock exclusively before it bumps the epoch, so a write either commits before the takeover
(and the new owner reads it) or fails: an instance that lost its lease cannot write for it.
"""

from __future__ import annotations

import re
import zlib

__all__ = ["FENCE_SQLSTATE", "INTAKE", "LockKeys", "schema_for", "schema_sql"]

#: the lease row of the intake session (the one MQTT session that takes commands in)
INTAKE = -1
#: what ``fence()`` raises when the lease is gone
FENCE_SQLSTATE = "LKT01"
SCHEMA_VERSION = 1


def schema_for(base_topic: str, vendor: str) -> str:
    """The schema of one vendor's bridge under one base topic: ``locktwin_okai`` on the default tree."""
    raw = f"{base_topic}_{vendor}".lower()
    return re.sub(r"[^a-z0-9_]", "_", raw)[:63]


class LockKeys:
    """Advisory lock keys (two int4) of one schema: partitions, members and the balancer's turn."""

    def __init__(self, schema: str) -> None:
        self.partition = zlib.crc32(f"{schema}:partition".encode()) & 0x7FFFFFFF
        self.member = zlib.crc32(f"{schema}:member".encode()) & 0x7FFFFFFF
        self.balance = zlib.crc32(f"{schema}:balance".encode()) & 0x7FFFFFFF


def schema_sql(schema: str, partitions: int) -> list[str]:
    keys = LockKeys(schema)
    s = f'"{schema}"'
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.twins (
            device text PRIMARY KEY, partition int NOT NULL, version bigint NOT NULL, desired text,
            reported text, metadata text, command_id text, present int NOT NULL DEFAULT 1)""",
        f"CREATE INDEX IF NOT EXISTS twins_partition ON {s}.twins(partition)",
        f"""CREATE TABLE IF NOT EXISTS {s}.commands (
            id text PRIMARY KEY, seq bigserial UNIQUE, partition int NOT NULL, device text NOT NULL,
            txn text, kind text, name text, value text, status text, source text, accepted_at float8,
            expires_at float8, updated_at float8, attempts int, idempotent int, sensitive int, error text,
            result text, reply_topic text, correlation bytea, answered int, acked_at float8, parent text,
            fingerprint text)""",
        f"CREATE UNIQUE INDEX IF NOT EXISTS commands_txn ON {s}.commands(device, txn)",
        f"CREATE INDEX IF NOT EXISTS commands_open ON {s}.commands(partition, status)",
        f"CREATE INDEX IF NOT EXISTS commands_unanswered ON {s}.commands(partition) WHERE answered = 0",
        f"""CREATE TABLE IF NOT EXISTS {s}.journal (
            seq bigserial PRIMARY KEY, at float8, device text, txn text, command_id text, entry text,
            source text, data text, instance text, epoch bigint)""",
        f"CREATE INDEX IF NOT EXISTS journal_device ON {s}.journal(device, seq)",
        f"""CREATE TABLE IF NOT EXISTS {s}.refusals (
            device text, partition int NOT NULL, txn text, fingerprint text, at float8, error text,
            PRIMARY KEY (device, txn))""",
        f"CREATE INDEX IF NOT EXISTS refusals_partition ON {s}.refusals(partition)",
        f"CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text)",
        f"""CREATE TABLE IF NOT EXISTS {s}.leases (
            partition int PRIMARY KEY, owner text, epoch bigint NOT NULL DEFAULT 0, expires_at timestamptz)""",
        f"""INSERT INTO {s}.leases(partition) SELECT p FROM generate_series({INTAKE}, {partitions - 1}) p
            ON CONFLICT DO NOTHING""",
        f"""CREATE TABLE IF NOT EXISTS {s}.members (
            owner text PRIMARY KEY, name text NOT NULL, lock_key int NOT NULL, started_at timestamptz,
            heartbeat_at timestamptz)""",
        f"CREATE SEQUENCE IF NOT EXISTS {s}.member_keys",
        f"""CREATE TABLE IF NOT EXISTS {s}.lease_log (
            seq bigserial PRIMARY KEY, partition int, epoch bigint, owner text, previous text, how text,
            at timestamptz NOT NULL DEFAULT clock_timestamp())""",
        f"""CREATE TABLE IF NOT EXISTS {s}.inbox (
            seq bigserial PRIMARY KEY, partition int NOT NULL, topic text NOT NULL, payload bytea NOT NULL,
            retained boolean NOT NULL, response_topic text, correlation bytea, expiry_left float8,
            queued_since float8, received_at float8 NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS inbox_partition ON {s}.inbox(partition, seq)",
        f"""CREATE TABLE IF NOT EXISTS {s}.forwarded (
            seq bigserial PRIMARY KEY, partition int NOT NULL, device text NOT NULL, kind text NOT NULL,
            body text NOT NULL, source text NOT NULL, received_at float8 NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS forwarded_partition ON {s}.forwarded(partition, seq)",
        f"""CREATE OR REPLACE FUNCTION {s}.fence(p int, o text, e bigint) RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock_shared({keys.partition}, p);
                PERFORM 1 FROM {s}.leases WHERE partition = p AND owner = o AND epoch = e;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'lease % of partition % is no longer held by %', e, p, o
                        USING ERRCODE = '{FENCE_SQLSTATE}';
                END IF;
            END $$""",
        f"""INSERT INTO {s}.meta(key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'),
            ('partitions', '{partitions}') ON CONFLICT DO NOTHING""",
    ]
