"""A fresh PostgreSQL database per test (issue 22): created on the server of ``LOCKTWIN_TEST_PG``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``, trust authentication as
``scripts/bootstrap --with-postgresql`` sets it up) and dropped afterwards.

A test that needs one calls :func:`require` (or uses :data:`needs_postgresql`): without a server it
is skipped with the reason, except under CI (``CI`` set to anything but ``false``/``0``), where the
test command installed one, so its absence fails the test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

ADMIN = os.environ.get("LOCKTWIN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

__all__ = ["ADMIN", "available", "fresh_database", "in_ci", "require"]


def available() -> str | None:
    """None when a server answers, else why not."""
    try:
        with psycopg.connect(ADMIN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"no PostgreSQL at {ADMIN.split('@')[-1]}: {str(exc).strip().splitlines()[0]}"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require() -> None:
    """Skip the calling test when no server answers (fail it under CI, where one must)."""
    why = available()
    if why is None:
        return
    if in_ci():
        pytest.fail(f"{why} (CI is set: scripts/bootstrap --with-postgresql should have started one)")
    pytest.skip(f"{why}; scripts/bootstrap --with-postgresql installs and starts one")


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a database made for this test; dropped (with its sessions) at the end."""
    name = f"locktwin_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
