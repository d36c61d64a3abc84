"""The accounts API's bodies and answers as pydantic models (aichat_gateway/apibody.py reads them).

Registration, login and password changes are shapes only: the e-mail rule (emailaddr.py, through
users.py) and the password policy (passwords.py) are applied by the handlers and the functions
they call, which the CLI shares; the documented lengths come from the same constants. A key's name
(keys.key_name) and spend caps (config/money.py's grammar, keysettings.cap_micro) are checked here.
A key's routing defaults are an object the marketplace's own parser reads (handed in as
`validate_key_routing`), so it stays opaque here and only its documentation is spelled out.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema

from aichat_gateway.accounts.keys import MAX_NAME_CHARS, key_name
from aichat_gateway.accounts.keysettings import cap_micro
from aichat_gateway.accounts.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from aichat_gateway.apibody import Answer, Body, Settable, Usd, UsdAmount
from aichat_gateway.emailaddr import MAX_EMAIL_CHARS

Email = Annotated[str, WithJsonSchema({"type": "string", "format": "email", "maxLength": MAX_EMAIL_CHARS})]
NewPassword = Annotated[
    str, WithJsonSchema({"type": "string", "minLength": MIN_PASSWORD_CHARS, "maxLength": MAX_PASSWORD_CHARS})
]
KeyName = Annotated[
    str, AfterValidator(key_name), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS})
]


def _spend_cap(micro: int, info: ValidationInfo) -> int:
    return cap_micro(micro, info.field_name or "cap")


SpendCap = Annotated[UsdAmount, AfterValidator(_spend_cap)]

_IDS: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "maxItems": 256}
_PRICE_CAP: dict[str, Any] = {"type": "string", "pattern": r"^[0-9]{1,5}(\.[0-9]{1,6})?$", "examples": ["0.15"]}
# marketplace/preferences.py's shape: a key's defaults are a chat request's `provider` object.
Routing = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "description": "Default routing preferences, the shape of a chat request's `provider` object",
            "properties": {
                "order": _IDS,
                "only": {**_IDS, "minItems": 1},
                "ignore": _IDS,
                "sort": {"enum": ["price", "latency", "throughput", "load", "balanced"]},
                "max_price": {
                    "type": "object",
                    "properties": {"prompt": _PRICE_CAP, "completion": _PRICE_CAP},
                    "additionalProperties": False,
                },
                "allow_fallbacks": {"type": "boolean"},
            },
            "additionalProperties": False,
        }
    ),
]

# ---- bodies ------------------------------------------------------------------------------------


class Registration(Body):
    email: Email
    password: NewPassword


class Credentials(Body):
    email: Email
    password: Annotated[str, Field(json_schema_extra={"maxLength": MAX_PASSWORD_CHARS})]


class PasswordChange(Body):
    current_password: Annotated[str, Field(json_schema_extra={"maxLength": MAX_PASSWORD_CHARS})]
    new_password: NewPassword


class KeyCreate(Body):
    name: KeyName
    routing: Routing | None = None
    daily_spend_cap_usd: SpendCap | None = None
    monthly_spend_cap_usd: SpendCap | None = None


class KeyPatch(Body):
    """The PATCH allow-list: everything a key's owner may change; only the fields sent change, and
    null clears a setting. The secret, prefix, owner and timestamps are not on it; revoking is DELETE."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Settable[KeyName] = None
    routing: Routing | None = None
    daily_spend_cap_usd: SpendCap | None = None
    monthly_spend_cap_usd: SpendCap | None = None


# ---- answers -----------------------------------------------------------------------------------


class User(Answer):
    id: uuid.UUID
    email: str
    role: Literal["user", "admin"]


class Session(Answer):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int


class SessionInfo(Answer):
    id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool = Field(description="The session of this request")


class SessionList(Answer):
    data: list[SessionInfo]


class _ShownSettings(Answer):
    routing: dict[str, Any] | None
    daily_spend_cap_usd: Usd | None
    monthly_spend_cap_usd: Usd | None


class Key(_ShownSettings):
    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedKey(_ShownSettings):
    id: uuid.UUID
    name: str
    key: str = Field(description="The secret: shown only in this answer")
    prefix: str
    created_at: datetime


class SessionKey(Answer):
    id: uuid.UUID
    name: Literal["dashboard"]
    key: str = Field(description="The secret: a gateway key for /v1, valid while this session is")
    expires_at: datetime


class KeyList(Answer):
    data: list[Key]


# ---- admin: accounts; the audit trail ----------------------------------------------------------


class AdminUserPatch(Body):
    """What an admin may change about an account: its role, and whether it is disabled (its
    sessions end and its keys stop working; enabling brings the keys back). Not one's own."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    role: Settable[Literal["user", "admin"]] = None
    disabled: Settable[bool] = None


class AdminUser(Answer):
    id: uuid.UUID
    email: str
    role: Literal["user", "admin"]
    disabled: bool
    created_at: datetime
    disabled_at: datetime | None


class AdminUserList(Answer):
    data: list[AdminUser]


class AccountEvent(Answer):
    id: str = Field(description="Pass as before_id to page back")
    occurred_at: datetime
    subject_id: uuid.UUID | None = Field(description="The account the event belongs to")
    subject_email: str | None = Field(description="Its e-mail; null for a failed login of an unknown address")
    actor_id: uuid.UUID | None = Field(description="Who acted: the owner, an admin, or null (the system)")
    actor_email: str | None
    action: str = Field(description="`<thing>.<what happened>`, e.g. login.succeeded, admin.credit")
    label: str = Field(description="The action in words")
    target_type: str | None
    target_id: str | None
    ip: str | None
    detail: dict[str, Any]


class AccountEventPage(Answer):
    data: list[AccountEvent]
    next_before_id: str | None = Field(description="The next (older) page's before_id; null on the last page")
