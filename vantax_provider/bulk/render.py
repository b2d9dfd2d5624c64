"""Checking and rendering one recipient of a bulk send; telling templates from literal text."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from vantax_provider._compat import AirflowFailException
from vantax_provider.exceptions import FieldError, VantaxValidationError

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
    error, not an empty string).  A JSON ``null`` read from a dict behaves like a missing key:
    printing it fails the recipient, while ``| default(...)``, ``or`` and ``{% if %}`` handle it.
    Strings without ``{{``, ``{%`` or ``{#`` are used as they are, and so are the ``literal`` fields;
    a template that does not compile raises ``AirflowFailException`` naming the field and the reason
    (no retry).

    :param fields: the operator's message fields: literals, templates, or None.
    :param context: the task context, visible to every template next to ``recipient``.
    :param literal: the names of fields that are data, never templates (their values came from an XCom).
    """

    def __init__(
        self, fields: Mapping[str, Any], context: Mapping[str, Any], literal: Collection[str] = ()
    ) -> None:
        from jinja2 import StrictUndefined, TemplateSyntaxError

        env = _environment()(undefined=StrictUndefined, keep_trailing_newline=True)
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
            if value is None:
                continue
            if name in literal:
                self._fields[name] = list(value) if isinstance(value, (list, tuple)) else value
            elif isinstance(value, (list, tuple)):
                self._fields[name] = [compile_(f"{name}[{i}]", v) for i, v in enumerate(value)]
            else:
                self._fields[name] = compile_(name, value)
        if errors:  # the same templates fail the same way on a retry
            raise AirflowFailException(str(VantaxValidationError(errors)))

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


def _environment() -> Any:
    """The sandboxed environment class, in which a None read from a dict is a strict undefined."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class NullValue(StrictUndefined):
        """A JSON null: false and equal to None in tests, an error when printed or used as text."""

        __slots__ = ()

        def __bool__(self) -> bool:  # type: ignore[override]
            return False

        def __eq__(self, other: object) -> bool:  # type: ignore[override]
            return other is None or isinstance(other, NullValue)

        def __ne__(self, other: object) -> bool:  # type: ignore[override]
            return not self.__eq__(other)

        def __hash__(self) -> int:  # type: ignore[override]
            return hash(None)

    def null(obj: Any, name: Any) -> Any:
        hint = f"{name!r} is null (JSON null); handle it in the template, e.g. with | default('...')"
        return NullValue(hint=hint, obj=obj, name=str(name))

    class Environment(ImmutableSandboxedEnvironment):
        def getitem(self, obj: Any, argument: Any) -> Any:
            value = super().getitem(obj, argument)
            return null(obj, argument) if value is None and isinstance(obj, Mapping) else value

        def getattr(self, obj: Any, attribute: str) -> Any:
            value = super().getattr(obj, attribute)
            return null(obj, attribute) if value is None and isinstance(obj, Mapping) else value

    return Environment


def renders_as_itself(text: str, env: Any) -> bool:
    """
    Whether Airflow's rendering of ``text`` in the Jinja environment ``env`` gives ``text`` back.

    True only when nothing in it is Jinja's to change: no delimiter of ``env``, no line break
    its lexer rewrites, no trailing newline it drops, no extension that rewrites the source, and
    ``env`` is not native (where ``"12"`` would become ``12``).  The caller also checks that its
    operator does not render natively on its own.
    """
    from jinja2.ext import Extension
    from jinja2.nativetypes import NativeEnvironment

    if isinstance(env, NativeEnvironment) or env.line_statement_prefix or env.line_comment_prefix:
        return False
    for extension in env.extensions.values():
        kind = type(extension)
        if kind.preprocess is not Extension.preprocess or kind.filter_stream is not Extension.filter_stream:
            return False
    if "\r" in text or (env.newline_sequence != "\n" and "\n" in text):
        return False
    if text.endswith("\n") and not env.keep_trailing_newline:
        return False
    markers = (env.block_start_string, env.variable_start_string, env.comment_start_string)
    return not any(marker in text for marker in markers)


def recipient_list(value: Any) -> Sequence[Any]:
    """``recipients`` as a sequence; anything else fails the task without retries (a retry gets the same)."""
    problem = AirflowFailException(
        f"recipients must be a list of dicts, got {type(value).__name__}: pass a list or an XComArg "
        "that returns one."
    )
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise problem
    if isinstance(value, Sequence):
        return value
    try:
        items = iter(value)  # an XComArg, say, is Iterable but refuses to iterate
    except TypeError:
        raise problem from None
    return list(items)


def recipient_problem(recipient: Any) -> str | None:
    """Why a recipient is not a JSON object with text keys, or None when it is one."""
    if not isinstance(recipient, Mapping):
        return f"recipient: must be a dict, got {type(recipient).__name__}"
    return _json_problem(recipient, "recipient", 0)


def _json_problem(value: Any, where: str, depth: int) -> str | None:
    if depth > 32:
        return f"{where} is nested more than 32 levels deep"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, which JSON cannot hold"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has a key of type {type(key).__name__}; keys must be text"  # not its value
            problem = _json_problem(item, f"{where}.{key[:40]}", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{where} is a {type(value).__name__}, which JSON cannot hold (use a list or a dict)"
