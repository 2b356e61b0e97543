"""What of a command's value may leave the engine, and what of it the store keeps once it ended.

A command's value is needed whole while it runs (a card id to issue, a key to set; after a restart
the command resumes from the store), and by nothing once it ended: a replay of its transaction is
recognised by its fingerprint (a keyed hash), not by its value. So:

- **published and journaled** (the twin's ``command``, the journal's ``request``): the value as the
  field's or action's ``redact`` makes it (a card id masked, ``****1234``); nothing of a sensitive
  action's arguments;
- **kept once ended** (the store's ``commands.value``): the same redacted form, written over the
  whole value by the command's final update (:func:`keep_redacted`), after which the store drops the
  old copies from its files (``Store.forget_old_copies``).

``redact`` functions must give back what they are given once it is redacted already, since the
documents of an ended command are rendered from its stored, redacted, value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from twin.adapter import ActionSpec, DesiredField
from twin.store import CommandRecord, TwinStore

__all__ = ["REDACTED", "keep_redacted", "public_value", "redactor", "settled_value"]

log = logging.getLogger(__name__)

#: what is shown of a sensitive action's arguments, and of a value its redaction failed on
REDACTED = "<redacted>"


def _unchanged(value: Any) -> Any:
    return value


def redactor(
    kind: str, name: str, *, fields: Mapping[str, DesiredField], actions: Mapping[str, ActionSpec]
) -> Callable[[Any], Any]:
    """The redaction of a command's value: its desired field's or its action's."""
    if kind == "set" and name in fields:
        return fields[name].redact
    if kind == "action" and name in actions:
        return actions[name].redact
    return _unchanged


def public_value(
    kind: str,
    name: str,
    value: Any,
    *,
    sensitive: bool,
    fields: Mapping[str, DesiredField],
    actions: Mapping[str, ActionSpec],
) -> Any:
    """A command's value as it may be journaled and published."""
    if sensitive:
        return REDACTED
    return _redact(kind, name, value, fields=fields, actions=actions)


def settled_value(cmd: CommandRecord, *, fields: Mapping[str, DesiredField], actions: Mapping[str, ActionSpec]) -> Any:
    """What the store keeps of ``cmd``'s value once it ended: nothing of a sensitive action (a key),
    the redacted form of anything else."""
    if cmd.sensitive:
        return None
    return _redact(cmd.kind, cmd.name, cmd.value, fields=fields, actions=actions)


def _redact(
    kind: str, name: str, value: Any, *, fields: Mapping[str, DesiredField], actions: Mapping[str, ActionSpec]
) -> Any:
    try:
        return redactor(kind, name, fields=fields, actions=actions)(value)
    except Exception:  # a redaction that fails shows nothing, and never keeps a command from ending
        log.exception("cannot redact the value of %s %s", kind, name)
        return REDACTED


def keep_redacted(
    cmd: CommandRecord, *, fields: Mapping[str, DesiredField], actions: Mapping[str, ActionSpec], store: TwinStore
) -> None:
    """``cmd`` ended: from now on its value is :func:`settled_value` (stored by the caller's update),
    and when that dropped something, the store forgets the old copies of it in its files."""
    settled = settled_value(cmd, fields=fields, actions=actions)
    if settled != cmd.value:
        cmd.value = settled
        store.forget_old_copies()
