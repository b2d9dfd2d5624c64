"""
When a templated message field names a template file, and when it is text (issue 13).

Airflow reads every templated string that ends with one of ``template_ext`` as the name of a
template file, so ``"Menu: https://example.com/menu.html"`` failed with ``TemplateNotFound``.
Here a value is a template file only when it can be one; the send operator and the notifier both
use :class:`TemplateFiles`, so the rule lives in this one place (see docs/operators/send-message.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from vantax_provider._compat import render_text
from vantax_provider.exceptions import FieldError, VantaxValidationError

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk.definitions._internal.templater import Templater as _Base
    from airflow.sdk.definitions.context import Context
else:
    _Base = object

__all__ = ["TEMPLATE_EXTENSIONS", "TemplateFiles", "looks_like_file_name", "template_search_path"]

#: The suffixes of template files, for the operator and the notifier.
TEMPLATE_EXTENSIONS: tuple[str, ...] = (".txt", ".html", ".j2")

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WHITE_SPACE = re.compile(r"\s")


def looks_like_file_name(value: object, extensions: Sequence[str] = TEMPLATE_EXTENSIONS) -> TypeGuard[str]:
    """True for a string that can name a template file: a known suffix, no white space, no URL scheme."""
    return (
        isinstance(value, str)
        and value.endswith(tuple(extensions))
        and _WHITE_SPACE.search(value) is None
        and _URL_SCHEME.match(value) is None
    )


def template_search_path(env: jinja2.Environment) -> list[str]:
    """The folders ``env`` loads template files from (the DAG's folder and ``template_searchpath``)."""
    return [str(p) for p in getattr(env.loader, "searchpath", None) or []]


def _find(env: jinja2.Environment, name: str) -> str | None:
    """The source of template file ``name``, or None when the environment cannot find it."""
    import jinja2

    if env.loader is None:
        return None
    try:
        source: str = env.loader.get_source(env, name)[0]
    except jinja2.TemplateNotFound:
        return None
    return source


class TemplateFiles(_Base):
    """
    Mixin for a templated Airflow object (operator or notifier) whose fields may name template files.

    A string value is a template file only when it ends with one of ``template_ext``, holds no
    white space and no URL scheme, and the file is in the DAG's template search path; every other
    value is text, rendered as usual.  A value that looks like a file name but is not found fails
    with a :class:`~vantax_provider.exceptions.VantaxValidationError` naming the field and the
    search path, since sending ``"body.html"`` to a customer is never what was meant.  A template
    that does not compile fails the same way, naming the field and the reason.
    """

    template_ext: Sequence[str] = TEMPLATE_EXTENSIONS

    def resolve_template_files(self) -> None:
        """At DAG parse time, read the template files that can be found; leave the rest for rendering."""
        env = None
        for name in self.template_fields:
            value = getattr(self, name, None)
            if looks_like_file_name(value, self.template_ext):
                env = env or self.get_template_env()
                source = _find(env, value)
                if source is not None:
                    setattr(self, name, source)
        self.prepare_template()

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        import jinja2

        try:
            return self._render_one(content, context, jinja_env, seen_oids)
        except jinja2.TemplateSyntaxError as exc:  # bad input: the same text fails the same way on a retry
            where = f" in {exc.name}" if exc.name else ""
            reason = f"is not a valid template: {exc.message or 'syntax error'} (line {exc.lineno}{where})"
            raise self.template_file_error(
                VantaxValidationError([FieldError(self._field_of(content), reason)])
            ) from None

    def _field_of(self, content: Any) -> str:
        """The name of the template field holding ``content`` (an item of a list field: ``name[i]``)."""
        for name in self.template_fields:
            value = getattr(self, name, None)
            if value is content:
                return name
            if isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if item is content:
                        return f"{name}[{i}]"
        return "a template field"

    def _render_one(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None,
        seen_oids: set[int] | None,
    ) -> Any:
        if not isinstance(content, str) or not content.endswith(tuple(self.template_ext)):
            return super().render_template(content, context, jinja_env, seen_oids)
        if seen_oids is not None and id(content) in seen_oids:
            return content  # data (e.g. from an XCom): never a template, never a file
        env = jinja_env or self.get_template_env()
        if not looks_like_file_name(content, self.template_ext):
            return render_text(self, env.from_string(content), context)
        if _find(env, content) is None:
            raise self.template_file_error(
                VantaxValidationError([FieldError(self._field_of(content), _not_found_reason(content, env))])
            )
        return super().render_template(content, context, env, seen_oids)

    def template_file_error(self, error: VantaxValidationError) -> Exception:
        """
        The exception to raise for a missing template file or a template that does not compile
        (operators fail without retries).
        """
        return error


def _not_found_reason(value: str, env: jinja2.Environment) -> str:
    where = template_search_path(env)
    place = f"the template search path {where}" if where else "a template folder (there is no search path)"
    return (
        f"{value!r} looks like a template file name (no white space, ends with "
        f"{value[value.rfind('.') :]!r}) but is not in {place}. Put the file there (or add its folder to "
        f"the DAG's template_searchpath); to send the words as text, write {{{{ {value!r} }}}}."
    )
