"""Arguments of the ``/request/{action}`` endpoints, validated before any vendor call.

Ranges and enumerations come from Tuya's documents (schedule minutes 0-1440, working-day bit mask,
roles, unlock-method DP codes, paging from 1). Each model knows which of its fields go to the
query string and which to the JSON body; the rest fill the path.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from bridges.tuya.cards import CARD_ID_PATTERN, mask, to_ms

__all__ = [
    "AddUser",
    "AllocateByNumber",
    "CardRef",
    "DeleteUsersIssue",
    "FreezeCard",
    "IssueCard",
    "ListLockUsers",
    "ListOpenLogs",
    "ListUnlockMethods",
    "ListUserDevices",
    "ListUsers",
    "ModifyCard",
    "NoArguments",
    "Paging",
    "ScheduleDetail",
    "SetUserRole",
    "SetUserSchedule",
    "UnlockAllocation",
    "UnlockCode",
    "UnlockRef",
    "UpdateUser",
    "UserRef",
    "WireArguments",
]

UnlockCode = Literal[
    "unlock_fingerprint",
    "unlock_password",
    "unlock_card",
    "unlock_face",
    "unlock_hand",
    "unlock_finger_vein",
    "unlock_eye",
    "unlock_key",
    "unlock_temporary",
    "unlock_dynamic",
    "unlock_app",
    "unlock_ble",
]
DEFAULT_CODES: tuple[UnlockCode, ...] = ("unlock_fingerprint", "unlock_password", "unlock_card")


#: ids that fill a path segment: no encoding needed, so the signed path is the sent path
PathId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Minute = Annotated[int, Field(ge=0, le=1440)]
Seconds = Annotated[int, Field(ge=0, lt=10**11)]


class WireArguments(BaseModel):
    """Base of every action's arguments: strict, and split into path, query and body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: fields that fill ``{name}`` in the path
    path_fields: ClassVar[frozenset[str]] = frozenset()

    def path_values(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in self.path_fields}

    def query(self) -> dict[str, Any] | None:
        return None

    def body(self) -> dict[str, Any] | None:
        return None

    def _rest(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.path_fields), exclude_none=True)


class NoArguments(WireArguments):
    pass


class Paging(WireArguments):
    page_no: int = Field(default=1, ge=1, description="page number, from 1")
    page_size: int = Field(default=20, ge=1, le=100)

    def query(self) -> dict[str, Any] | None:
        return self._rest()


class ListUsers(Paging):
    """``GET /v1.1/devices/{device_id}/users``: fuzzy keyword on name and account, role filter."""

    keyword: str = Field(default="", max_length=64)
    role: Literal["", "admin", "normal"] = ""


class ListLockUsers(Paging):
    """``GET /v1.0/smart-lock/devices/{device_id}/users``: users with their unlock methods."""

    codes: list[UnlockCode] = Field(default=list(DEFAULT_CODES), min_length=1)

    def query(self) -> dict[str, Any] | None:
        return {"codes": ",".join(self.codes), "page_no": self.page_no, "page_size": self.page_size}


class UserRef(WireArguments):
    path_fields: ClassVar[frozenset[str]] = frozenset({"user_id"})
    user_id: PathId = Field(description='the user id ("0": the current user, v1.1 only)')


class _Profile(WireArguments):
    nick_name: str = Field(min_length=1, max_length=64)
    sex: Literal[0, 1, 2] = Field(description="0 unknown, 1 male, 2 female")
    birthday: Seconds | None = Field(default=None, description="date of birth, epoch seconds")
    height: int | None = Field(default=None, ge=0, le=300, description="cm")
    weight: int | None = Field(default=None, ge=0, le=500_000, description="g")

    def body(self) -> dict[str, Any] | None:
        return self._rest()


class AddUser(_Profile):
    contact: str | None = Field(default=None, max_length=128)


class UpdateUser(_Profile):
    path_fields: ClassVar[frozenset[str]] = frozenset({"user_id"})
    user_id: PathId


class DeleteUsersIssue(WireArguments):
    user_ids: list[PathId] = Field(min_length=1, max_length=50)

    def path_values(self) -> dict[str, str]:
        return {"user_ids": ",".join(self.user_ids)}


class SetUserRole(UserRef):
    role: Literal["admin", "normal"]

    def body(self) -> dict[str, Any] | None:
        return {"role": self.role}


class ScheduleDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start_minute: Minute
    end_minute: Minute
    working_day: int = Field(ge=0, le=127, description="bit mask: 1 Sunday, 2 Monday ... 64 Saturday")
    all_day: bool = False
    time_zone_id: str | None = Field(default=None, max_length=64)


class SetUserSchedule(UserRef):
    permanent: bool
    effective_time: Seconds | None = None
    expired_time: Seconds | None = None
    schedule_details: list[ScheduleDetail] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _window(self) -> SetUserSchedule:
        if not self.permanent:
            if self.effective_time is None or self.expired_time is None:
                raise ValueError("a schedule that is not permanent needs effective_time and expired_time")
            if self.expired_time <= self.effective_time:
                raise ValueError("expired_time must be after effective_time")
        return self

    def body(self) -> dict[str, Any] | None:
        return self._rest()


class ListUnlockMethods(UserRef, Paging):
    codes: list[UnlockCode] = Field(default_factory=list)
    unlock_name: str = Field(default="", max_length=64)

    def query(self) -> dict[str, Any] | None:
        return {
            "codes": ",".join(self.codes),
            "unlock_name": self.unlock_name,
            "page_no": self.page_no,
            "page_size": self.page_size,
        }


class UnlockRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dp_code: UnlockCode
    unlock_sn: int = Field(ge=0, le=10_000)


class UnlockAllocation(WireArguments):
    user_id: PathId
    unlock_list: list[UnlockRef] = Field(min_length=1, max_length=50)

    def body(self) -> dict[str, Any] | None:
        return self._rest()


class AllocateByNumber(UserRef):
    no: str = Field(pattern=r"^[0-9]{1,6}$", description="serial number of the unlock method on the lock")
    type: Literal["fingerprint", "password", "card"]

    def body(self) -> dict[str, Any] | None:
        return {"no": self.no, "type": self.type}


class ListUserDevices(Paging):
    path_fields: ClassVar[frozenset[str]] = frozenset({"uid"})
    uid: PathId


class ListOpenLogs(Paging):
    start_time: int | None = Field(default=None, ge=0, description="ms")
    end_time: int | None = Field(default=None, ge=0, description="ms")


class IssueCard(WireArguments):
    card_id: str = Field(pattern=CARD_ID_PATTERN, description="the card issuer's unique card id")

    def body(self) -> dict[str, Any] | None:
        return {"card_id": self.card_id}

    @staticmethod
    def redact(arguments: Any) -> Any:
        """The arguments as they may be published and kept: the card id masked (``****1234``)."""
        if isinstance(arguments, dict) and isinstance(arguments.get("card_id"), str):
            return {**arguments, "card_id": mask(arguments["card_id"])}
        return arguments


class CardRef(WireArguments):
    path_fields: ClassVar[frozenset[str]] = frozenset({"lock_card_id"})
    lock_card_id: PathId


class ModifyCard(CardRef):
    begin: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _window(self) -> ModifyCard:
        if self.end <= self.begin:
            raise ValueError("end must be after begin")
        return self

    def body(self) -> dict[str, Any] | None:
        return {"begin_time": to_ms(self.begin), "end_time": to_ms(self.end)}


class FreezeCard(CardRef):
    frozen: bool

    def body(self) -> dict[str, Any] | None:
        return {"freeze_status": 1 if self.frozen else 0}
