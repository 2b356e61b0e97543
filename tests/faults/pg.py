"""A fresh PostgreSQL database per test run (issue 22): created on the server of ``LOCKTWIN_TEST_PG``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``, trust authentication as
``scripts/bootstrap`` sets it up) and dropped afterwards. Tests skip only where no server answers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

ADMIN = os.environ.get("LOCKTWIN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def available() -> str | None:
    """None when a server answers, else why not."""
    try:
        with psycopg.connect(ADMIN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"no PostgreSQL at {ADMIN.split('@')[-1]}: {str(exc).strip().splitlines()[0]}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a database made for this run; dropped (with its sessions) at the end."""
    name = f"locktwin_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
