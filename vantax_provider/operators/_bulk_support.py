"""
Pieces of the bulk send operator: per-recipient rendering and the progress checkpoint.

The checkpoint is a bitmap of the positions already sent, zlib-compressed and base64-encoded:
10,000 recipients take 1,250 bytes before compression, so one state-store key holds up to
~400,000 positions under the 64 KB value policy; longer lists spread over more keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vantax_provider.exceptions import FieldError, VantaxValidationError

if TYPE_CHECKING:
    from vantax_provider.operators._state import StateStore

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "vantax_bulk_sent"
#: Raw bitmap bytes per state-store key: base64 of the compressed chunk stays under 64 KB.
CHUNK_BYTES = 45_000
_TEMPLATE_MARKERS = ("{{", "{%", "{#")


class RenderError(Exception):
    """One recipient's message could not be rendered; the text names the field and the reason."""

    def __init__(self, field: str, reason: str, conversation_id: str | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.conversation_id = conversation_id


class Renderer:
    """
    Compiles the message fields once and renders them per recipient.

    Sandboxed (no access to unsafe attributes, no mutation) and strict (a missing key is an
    error, not an empty string).  Strings without ``{{``, ``{%`` or ``{#`` are used as they are.

    :param fields: the operator's message fields: literals, templates, or None.
    :param context: the task context, visible to every template next to ``recipient``.
    """

    def __init__(self, fields: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        from jinja2 import StrictUndefined, TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
        globals_ = dict(context)
        errors: list[FieldError] = []

        def compile_(name: str, value: Any) -> Any:
            if not isinstance(value, str) or not any(m in value for m in _TEMPLATE_MARKERS):
                return value
            try:
                return env.from_string(value, globals=globals_)
            except TemplateSyntaxError as exc:
                errors.append(FieldError(name, f"is not a valid template: {exc.message} (line {exc.lineno})"))
                return value

        self._fields: dict[str, Any] = {}
        for name, value in fields.items():
            if isinstance(value, (list, tuple)):
                self._fields[name] = [compile_(f"{name}[{i}]", v) for i, v in enumerate(value)]
            elif value is not None:
                self._fields[name] = compile_(name, value)
        if errors:
            raise VantaxValidationError(errors)

    def render(self, recipient: Any) -> dict[str, Any]:
        """The fields for one recipient; raises :class:`RenderError` naming the failing field."""
        if not isinstance(recipient, Mapping):
            raise RenderError("recipient", f"must be a dict, got {type(recipient).__name__}")
        out: dict[str, Any] = {}
        for name, part in self._fields.items():
            if isinstance(part, list):
                value: Any = [self._one(f"{name}[{i}]", p, recipient, out) for i, p in enumerate(part)]
                value = [v for v in value if v != ""] or None
            else:
                value = self._one(name, part, recipient, out)
                if value == "" and name != "content":
                    value = None  # an empty optional field falls back to its default
            out[name] = value
        return out

    def conversation_id_or_none(self, recipient: Any) -> str | None:
        """The recipient's conversation id for a report line, or None when it cannot be rendered."""
        try:
            part = self._fields.get("conversation_id")
            value = self._one("conversation_id", part, recipient, {})
        except RenderError:
            return None
        return value if isinstance(value, str) else None

    @staticmethod
    def _one(name: str, part: Any, recipient: Any, rendered: Mapping[str, Any]) -> Any:
        if not hasattr(part, "render"):
            return part
        try:
            value: str = part.render(recipient=recipient)
        except Exception as exc:  # one recipient's bad data must not stop the batch
            reason = getattr(exc, "message", None) or str(exc)
            conversation_id = rendered.get("conversation_id")
            raise RenderError(
                name,
                f"could not be rendered: {type(exc).__name__}: {str(reason)[:200]}",
                conversation_id if isinstance(conversation_id, str) else None,
            ) from None
        return value


class Bitmap:
    """One bit per recipient position: set once the message was sent."""

    def __init__(self, total: int, data: bytes | None = None) -> None:
        self.total = total
        size = (total + 7) // 8
        self._bits = bytearray(data[:size] if data else b"").ljust(size, b"\0")
        self.count = sum(bin(b).count("1") for b in self._bits)

    def __getitem__(self, index: int) -> bool:
        return bool(self._bits[index >> 3] & (1 << (index & 7)))

    def set(self, index: int) -> None:
        if not self[index]:
            self._bits[index >> 3] |= 1 << (index & 7)
            self.count += 1

    def snapshot(self) -> bytes:
        return bytes(self._bits)


def fingerprint(recipients: Any) -> str:
    """A digest of the recipient list: a checkpoint applies only to the list it was written for."""
    material = json.dumps(recipients, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def encode_chunk(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, 6)).decode("ascii")


def decode_chunk(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))


class Checkpoint:
    """
    Reads and writes the sent-positions bitmap in the task's state store.

    Keys ``vantax_bulk_sent``, ``vantax_bulk_sent_1``, ...; each value carries the list's
    fingerprint and size, so a checkpoint of another list (the upstream task produced different
    recipients) is ignored rather than applied.  Bits are only ever added, so a crash between
    two key writes leaves a valid, if older, checkpoint.

    :param store: the task's ``task_state_store``, or None on Airflow before 3.3 (a no-op then).
    :param total: number of recipients.
    :param digest: :func:`fingerprint` of the recipients.
    """

    def __init__(self, store: StateStore | None, total: int, digest: str) -> None:
        self.store, self.total, self.digest = store, total, digest
        self.chunks = max(1, -(-((total + 7) // 8) // CHUNK_BYTES))

    @staticmethod
    def key(chunk: int) -> str:
        return CHECKPOINT_KEY if chunk == 0 else f"{CHECKPOINT_KEY}_{chunk}"

    def load(self) -> Bitmap:
        if self.store is None:
            return Bitmap(self.total)
        parts: list[bytes] = []
        for chunk in range(self.chunks):
            value = self.store.get(self.key(chunk))
            if not isinstance(value, dict):
                break
            if value.get("fingerprint") != self.digest or value.get("total") != self.total:
                log.warning(
                    "A progress checkpoint of this task instance belongs to a different recipient list; "
                    "ignoring it (Idempotency-Keys still prevent duplicates of unchanged messages)."
                )
                return Bitmap(self.total)
            try:
                parts.append(decode_chunk(str(value.get("bits", ""))).ljust(CHUNK_BYTES, b"\0"))
            except (ValueError, zlib.error):
                log.warning("Unreadable progress checkpoint %r ignored.", self.key(chunk))
                break
        return Bitmap(self.total, b"".join(parts))

    def save(self, data: bytes) -> None:
        if self.store is None:
            return
        for chunk in range(self.chunks):
            piece = data[chunk * CHUNK_BYTES : (chunk + 1) * CHUNK_BYTES]
            value = {"fingerprint": self.digest, "total": self.total, "bits": encode_chunk(piece)}
            self.store.set(self.key(chunk), value)
