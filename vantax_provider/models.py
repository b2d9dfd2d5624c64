"""Typed models of the Vantax messages API, and the rules a message must pass before it is sent."""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vantax_provider import contract
from vantax_provider.exceptions import FieldError, VantaxValidationError

# The status vocabulary lives in vantax_provider.status; these names stay importable from here.
from vantax_provider.status import NON_TERMINAL_STATUSES as NON_TERMINAL_STATUSES
from vantax_provider.status import TERMINAL_STATUSES as TERMINAL_STATUSES
from vantax_provider.status import MessageStatus as MessageStatus
from vantax_provider.status import Outcome

log = logging.getLogger(__name__)


class Channel(str, Enum):
    """The channels a message can be sent on."""

    SMS = "sms"
    WHATSAPP = "whatsapp"
    FACEBOOK = "facebook"
    INSTAGRAM = "instagram"
    EMAIL = "email"

    def __str__(self) -> str:
        return self.value


#: Channels that send from one of the account's phone numbers.
PHONE_CHANNELS = frozenset({Channel.SMS, Channel.WHATSAPP})


#: Control characters, and the Unicode line and paragraph separators (U+2028, U+2029).
_LINE_BREAKING = frozenset({"Cc", "Zl", "Zp"})


def _reject_control_chars(value: str, *, allow_newlines: bool, line_separators: bool = False) -> str:
    """Refuse control characters; with ``line_separators``, U+2028 and U+2029 too."""
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    refused = _LINE_BREAKING if line_separators else frozenset({"Cc"})
    for ch in value:
        if ch not in allowed and unicodedata.category(ch) in refused:
            raise PydanticCustomError(
                "control_char", "must not contain control character U+{code}", {"code": f"{ord(ch):04X}"}
            )
    return value


def check_id(value: str) -> str:
    """Validate a conversation, message or phone-number id (they become URL path segments)."""
    if not value.strip():
        raise PydanticCustomError("empty_id", "must not be empty or blank")
    if len(value) > contract.ID_MAX_CHARS:
        raise PydanticCustomError(
            "id_too_long", "must be at most {limit} characters", {"limit": contract.ID_MAX_CHARS}
        )
    return _reject_control_chars(value, allow_newlines=False)


def _check_url(url: object, index: int) -> str:
    # The entry is named by its position, never quoted: a URL may carry phone data or content.
    if not isinstance(url, str):
        raise PydanticCustomError("url_type", "entry {index} must be a string URL", {"index": index})
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(
            "url_absolute", "entry {index} is not an absolute http(s) URL", {"index": index}
        )
    if len(url) > contract.URL_MAX_CHARS or any(c.isspace() for c in url):
        raise PydanticCustomError(
            "url_chars",
            "entry {index} is longer than {limit} characters or contains white space",
            {"index": index, "limit": contract.URL_MAX_CHARS},
        )
    return url


class SendMessageRequest(BaseModel):
    """
    One outbound message, validated against the API reference's rules.

    Building it raises one :class:`pydantic.ValidationError` that lists every failing field;
    :func:`build_send_request` turns that into a :class:`VantaxValidationError`.

    :param conversation_id: the conversation to post into.
    :param channel: sms, whatsapp, facebook, instagram or email.
    :param content: the body, 1 to 4000 characters (the plain-text fallback for email).
    :param subject: email only, required there, at most 255 characters.
    :param html: email only, an optional rich-text body.
    :param from_phone_number_id: the sending number, required for sms and whatsapp.
    :param media_url: absolute http(s) URLs to attach; ignored by email.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    conversation_id: str
    channel: Channel
    content: str = Field(min_length=1, max_length=contract.CONTENT_MAX_CHARS)
    subject: str | None = Field(default=None, max_length=contract.SUBJECT_MAX_CHARS)
    html: str | None = None
    from_phone_number_id: str | None = None
    media_url: list[str] | None = None

    @field_validator("channel", mode="before")
    @classmethod
    def _normalise_channel(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("conversation_id", "from_phone_number_id")
    @classmethod
    def _check_ids(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value)

    @field_validator("content")
    @classmethod
    def _check_content(cls, value: str) -> str:
        if value and not value.strip():
            raise PydanticCustomError("blank", "must not be white space only")
        return _reject_control_chars(value, allow_newlines=True)

    @field_validator("subject")
    @classmethod
    def _check_subject(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value and not value.strip():
            raise PydanticCustomError("blank", "must not be white space only")
        # A newline (or U+2028/U+2029) in a subject is an email header injection.
        return _reject_control_chars(value, allow_newlines=False, line_separators=True)

    @field_validator("media_url", mode="before")
    @classmethod
    def _check_media(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise PydanticCustomError("media_type", "must be a list of URLs")
        return [_check_url(url, i) for i, url in enumerate(value)] or None

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored_fields(cls, data: Any) -> Any:
        channel = _channel_of(data)
        if channel is None:
            return data
        ignored = ("media_url", "from_phone_number_id") if channel is Channel.EMAIL else ("subject", "html")
        dropped = [name for name in ignored if data.get(name) not in (None, "", [])]
        if dropped:
            log.warning("Channel %s ignores %s: not sent.", channel.value, ", ".join(dropped))
        return {k: v for k, v in data.items() if k not in ignored}

    @model_validator(mode="after")
    def _check_channel_rules(self) -> SendMessageRequest:
        errors = _channel_rule_errors(self.model_dump())
        if errors:
            raise ValueError("; ".join(str(e) for e in errors))
        return self

    def to_body(self) -> dict[str, Any]:
        """The JSON body of the create call: the path's id and unset fields are left out."""
        return self.model_dump(mode="json", exclude={"conversation_id"}, exclude_none=True)


def _channel_of(data: Any) -> Channel | None:
    raw = data.get("channel") if isinstance(data, dict) else None
    try:
        return Channel(raw.strip().lower() if isinstance(raw, str) else raw)
    except ValueError:
        return None  # the field validator reports the channel itself


def _channel_rule_errors(data: dict[str, Any]) -> list[FieldError]:
    channel = _channel_of(data)
    errors = []
    if channel is Channel.EMAIL and not data.get("subject"):
        errors.append(FieldError("subject", "is required for channel 'email'"))
    if channel in PHONE_CHANNELS and not data.get("from_phone_number_id"):
        errors.append(FieldError("from_phone_number_id", f"is required for channel '{channel}'"))
    return errors


def build_send_request(**fields: Any) -> SendMessageRequest:
    """Build a :class:`SendMessageRequest`, raising :class:`VantaxValidationError` on bad input."""
    try:
        return SendMessageRequest(**fields)
    except ValidationError as exc:
        # Cross-field rules run only once every field is valid: report both kinds together.
        errors = [e for e in _field_errors(exc) if e.field != "request"]
        errors += [e for e in _channel_rule_errors(fields) if e.field not in {f.field for f in errors}]
        raise VantaxValidationError(errors or _field_errors(exc)) from None


def _field_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "request"
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "is not a field of a Vantax message"
        elif err["type"] == "missing":
            reason = "is required"
        out.append(FieldError(field, reason))
    return out


#: Not documented: a defensive bound on a status value (the documented ones are short words).
MAX_STATUS_CHARS = 64


class Message(BaseModel):
    """
    A message as the API returns it.

    Lenient on purpose: unknown fields are ignored and ``status`` is kept as a string, so that
    a value the API adds later (e.g. ``read``) still parses.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    conversation_id: str | None = None
    channel: str | None = None
    direction: str | None = None
    content: str | None = None
    subject: str | None = None
    sender_type: str | None = None
    media_url: list[str] = Field(default_factory=list)
    status: str = "queued"
    created_at: datetime | None = None

    @field_validator("media_url", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return [] if value is None else value

    @field_validator("id")
    @classmethod
    def _check_message_id(cls, value: str) -> str:
        return check_id(value)

    @field_validator("status")
    @classmethod
    def _check_status(cls, value: str) -> str:
        if len(value) > MAX_STATUS_CHARS:
            raise PydanticCustomError("status_too_long", "must be at most {limit} characters",
                                      {"limit": MAX_STATUS_CHARS})  # fmt: skip
        return _reject_control_chars(value, allow_newlines=False, line_separators=True)

    @classmethod
    def lenient(cls, data: dict[str, Any]) -> Message | None:
        """
        The message from a create answer whose id is usable although other fields do not fit:
        those fields are dropped (``status`` then reads ``queued``).  None when the id is unusable.
        """
        kept = dict(data)
        for _ in range(len(cls.model_fields) + 1):
            try:
                return cls.model_validate(kept)
            except ValidationError as exc:
                bad = {e["loc"][0] for e in exc.errors(include_input=False) if e["loc"]}
                if "id" in bad or not bad & set(kept):
                    return None
                log.warning("Vantax answered a created message with unusable field(s) %s: ignored.",
                            ", ".join(sorted(str(b) for b in bad)))  # fmt: skip
                kept = {k: v for k, v in kept.items() if k not in bad}
        return None

    @property
    def is_terminal(self) -> bool:
        return MessageStatus.is_terminal(self.status)

    def summary(self) -> dict[str, Any]:
        """Ids and status only: what is safe to log and to push to XCom without the body."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "channel": self.channel,
            "status": self.status,
        }


@dataclass(frozen=True)
class DeliveryCheck:
    """
    What a wait learned about one message.

    Returned by the hook's ``check_message_status`` (one reading) and ``wait_for_message_status``.

    :param outcome: how the reading or the wait ended: success, failure, unknown or pending for one
        reading; timeout or error for a whole wait (:class:`~vantax_provider.status.Outcome`).
    :param text: what a user reads about it, e.g. the reason of a failure.
    :param status: the last delivery status read; None when none could be read.
    :param message: the last message read, if any (its content included: do not log it).
    """

    outcome: Outcome
    text: str
    status: str | None = None
    message: Message | None = None
