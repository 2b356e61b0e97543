"""Every user and card endpoint of Tuya's documents as a ``/request/{action}``, by table.

Each row names the action, the HTTP method (its path, which ``{device_id}``, ``{project_id}`` and
the argument's path fields fill, is the action's entry of :data:`bridges.tuya.client.PATHS`) and the
argument model that validates the payload and splits it
into query and body. Answers are the vendor's ``result``, paging fields included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridges.tuya import arguments as a
from bridges.tuya.client import PATHS

__all__ = ["ENDPOINTS", "Endpoint"]


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    name: str
    method: str
    path: str
    arguments: type[a.WireArguments]
    capability: str
    description: str
    #: the request or the answer carries a secret (a card id, a device's local_key): its arguments and
    #: answer are published only to the requester and never stored (twin.adapter.ActionSpec)
    sensitive: bool = False
    #: what of the arguments may be published, journaled and kept (a card id masked)
    redact: Callable[[Any], Any] | None = None

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"


def _e(
    name: str,
    method: str,
    arguments: type[a.WireArguments],
    capability: str,
    description: str,
    *,
    sensitive: bool = False,
    redact: Callable[[Any], Any] | None = None,
) -> Endpoint:
    # the path is the action's entry of the client's table of every path
    return Endpoint(
        name=name,
        method=method,
        path=PATHS[name],
        arguments=arguments,
        capability=capability,
        description=description,
        sensitive=sensitive,
        redact=redact,
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    # users (tuya-smart-lock-user-api)
    _e(
        "list_users",
        "GET",
        a.ListUsers,
        "users",
        "users, filtered by keyword and role, paged (v1.1)",
    ),
    _e("list_users_v1", "GET", a.NoArguments, "users", "every user of the lock (v1.0)"),
    _e("list_lock_users", "GET", a.ListLockUsers, "users", "users with their unlock methods, paged"),
    _e(
        "get_user",
        "GET",
        a.UserRef,
        "users",
        "one user (v1.1; 0 = current)",
    ),
    _e("get_user_v1", "GET", a.UserRef, "users", "one user's profile (v1.0; not admins)"),
    _e("add_user", "POST", a.AddUser, "users", "add a user"),
    _e("update_user", "PUT", a.UpdateUser, "users", "update a user's profile"),
    _e("delete_user", "DELETE", a.UserRef, "users", "delete a user"),
    _e(
        "delete_users_issue",
        "POST",
        a.DeleteUsersIssue,
        "users",
        "delete users and issue it to the lock",
    ),
    _e(
        "set_user_role",
        "PUT",
        a.SetUserRole,
        "users",
        "make a user admin or normal",
    ),
    _e(
        "set_user_schedule",
        "PUT",
        a.SetUserSchedule,
        "users",
        "a user's validity period",
    ),
    _e(
        "list_unlock_methods",
        "GET",
        a.ListUnlockMethods,
        "users",
        "a user's unlock methods, paged",
    ),
    _e("list_absent_users", "GET", a.NoArguments, "users", "users who are away"),
    _e(
        "allocate_unlock_method",
        "POST",
        a.UnlockAllocation,
        "users",
        "allocate unlock methods to a user",
    ),
    _e(
        "allocate_unlock_method_by_number",
        "POST",
        a.AllocateByNumber,
        "users",
        "allocate one unlock method by its number and type",
    ),
    _e(
        "cancel_unlock_allocation",
        "POST",
        a.UnlockAllocation,
        "users",
        "take unlock methods back from a user",
    ),
    _e(
        "list_user_devices",
        "GET",
        a.ListUserDevices,
        "users",
        "the locks of a user (uid), paged; each with its local_key",
        sensitive=True,
    ),
    # lock
    _e(
        "list_remote_unlocks",
        "GET",
        a.NoArguments,
        "lock",
        "remote unlock capabilities",
    ),
    _e("list_open_logs", "GET", a.ListOpenLogs, "lock", "unlock records, paged"),
    # cards (tuya-doorlock-card-api)
    _e(
        "issue_card",
        "POST",
        a.IssueCard,
        "cards",
        "issue a card to the lock",
        redact=a.IssueCard.redact,  # its card id masked wherever it is shown, and once it ended
    ),
    _e("get_card", "GET", a.CardRef, "cards", "a card's validity window"),
    _e("modify_card", "PUT", a.ModifyCard, "cards", "change a card's validity window"),
    _e(
        "freeze_card",
        "PUT",
        a.FreezeCard,
        "cards",
        "freeze or unfreeze a card",
    ),
    _e("delete_card", "DELETE", a.CardRef, "cards", "delete a card from the lock"),
)
