"""Every user and card endpoint of Tuya's documents as a ``/request/{action}``, by table.

Each row names the action, the HTTP method, the path (``{device_id}``, ``{project_id}`` and the
argument's path fields fill it) and the argument model that validates the payload and splits it
into query and body. Answers are the vendor's ``result``, paging fields included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridges.tuya import arguments as a

__all__ = ["ENDPOINTS", "Endpoint"]

_SL = "/v1.0/smart-lock/devices/{device_id}"
_DV = "/v1.0/devices/{device_id}"
_CARDS = "/v1.0/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards"
_CARD_QUERY = "/v1.0/cloud/osaas/projects/{project_id}/card-issue-devices/lock-devices/{device_id}/cards"


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
    path: str,
    arguments: type[a.WireArguments],
    capability: str,
    description: str,
    *,
    sensitive: bool = False,
    redact: Callable[[Any], Any] | None = None,
) -> Endpoint:
    return Endpoint(
        name=name,
        method=method,
        path=path,
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
        "/v1.1/devices/{device_id}/users",
        a.ListUsers,
        "users",
        "users, filtered by keyword and role, paged (v1.1)",
    ),
    _e("list_users_v1", "GET", _DV + "/users", a.NoArguments, "users", "every user of the lock (v1.0)"),
    _e("list_lock_users", "GET", _SL + "/users", a.ListLockUsers, "users", "users with their unlock methods, paged"),
    _e(
        "get_user",
        "GET",
        "/v1.1/devices/{device_id}/users/{user_id}",
        a.UserRef,
        "users",
        "one user (v1.1; 0 = current)",
    ),
    _e("get_user_v1", "GET", _DV + "/users/{user_id}", a.UserRef, "users", "one user's profile (v1.0; not admins)"),
    _e("add_user", "POST", _DV + "/user", a.AddUser, "users", "add a user"),
    _e("update_user", "PUT", _DV + "/users/{user_id}", a.UpdateUser, "users", "update a user's profile"),
    _e("delete_user", "DELETE", _DV + "/users/{user_id}", a.UserRef, "users", "delete a user"),
    _e(
        "delete_users_issue",
        "POST",
        _SL + "/users/{user_ids}/actions/delete-users-issue",
        a.DeleteUsersIssue,
        "users",
        "delete users and issue it to the lock",
    ),
    _e(
        "set_user_role",
        "PUT",
        _SL + "/users/{user_id}/actions/role",
        a.SetUserRole,
        "users",
        "make a user admin or normal",
    ),
    _e(
        "set_user_schedule",
        "PUT",
        _SL + "/users/{user_id}/schedule",
        a.SetUserSchedule,
        "users",
        "a user's validity period",
    ),
    _e(
        "list_unlock_methods",
        "GET",
        _SL + "/opmodes/{user_id}",
        a.ListUnlockMethods,
        "users",
        "a user's unlock methods, paged",
    ),
    _e("list_absent_users", "GET", _DV + "/door-lock/absent-users", a.NoArguments, "users", "users who are away"),
    _e(
        "allocate_unlock_method",
        "POST",
        _DV + "/door-lock/opmodes/actions/allocate",
        a.UnlockAllocation,
        "users",
        "allocate unlock methods to a user",
    ),
    _e(
        "allocate_unlock_method_by_number",
        "POST",
        _DV + "/device-lock/users/{user_id}/allocate",
        a.AllocateByNumber,
        "users",
        "allocate one unlock method by its number and type",
    ),
    _e(
        "cancel_unlock_allocation",
        "POST",
        _SL + "/opmodes/actions/cancel-allocate",
        a.UnlockAllocation,
        "users",
        "take unlock methods back from a user",
    ),
    _e(
        "list_user_devices",
        "GET",
        "/v1.0/smart-lock/users/{uid}/devices",
        a.ListUserDevices,
        "users",
        "the locks of a user (uid), paged; each with its local_key",
        sensitive=True,
    ),
    # lock
    _e(
        "list_remote_unlocks",
        "GET",
        _DV + "/door-lock/remote-unlocks",
        a.NoArguments,
        "lock",
        "remote unlock capabilities",
    ),
    _e("list_open_logs", "GET", _DV + "/door-lock/open-logs", a.ListOpenLogs, "lock", "unlock records, paged"),
    # cards (tuya-doorlock-card-api)
    _e(
        "issue_card",
        "POST",
        _CARDS,
        a.IssueCard,
        "cards",
        "issue a card to the lock",
        redact=a.IssueCard.redact,  # its card id masked wherever it is shown, and once it ended
    ),
    _e("get_card", "GET", _CARD_QUERY + "/{lock_card_id}", a.CardRef, "cards", "a card's validity window"),
    _e("modify_card", "PUT", _CARDS + "/{lock_card_id}", a.ModifyCard, "cards", "change a card's validity window"),
    _e(
        "freeze_card",
        "PUT",
        _CARDS + "/{lock_card_id}/freeze-status",
        a.FreezeCard,
        "cards",
        "freeze or unfreeze a card",
    ),
    _e("delete_card", "DELETE", _CARDS + "/{lock_card_id}", a.CardRef, "cards", "delete a card from the lock"),
)
