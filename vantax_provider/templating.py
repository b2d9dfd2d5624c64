"""
The templating rules of the provider's templated objects (operators and notifier), in one place.

- Text that came from an XCom is data: it is sent as it is, never rendered as a template, in
  every mapping form (:func:`keep_xcom_values_literal`, :func:`values_from_xcom`).
- A templated string is a template file only when it can be one (:class:`TemplateFiles`):
  Airflow reads every string that ends with one of ``template_ext`` as a file name, so
  ``"Menu: https://example.com/menu.html"`` would fail with ``TemplateNotFound``.

See docs/operators/send-message.md and docs/operators/bulk-send.md.  The Airflow internals these
rules read fail loudly (:class:`AirflowException` naming them) when a new Airflow changes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence, Sized
from typing import TYPE_CHECKING, Any, TypeGuard

from vantax_provider._compat import AirflowException
from vantax_provider.exceptions import FieldError, VantaxValidationError

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk.definitions._internal.templater import Templater as _Base
    from airflow.sdk.definitions.context import Context
else:
    _Base = object

__all__ = [
    "RENDER_STEP",
    "RENDER_STEP_PARAMETERS",
    "TEMPLATE_EXTENSIONS",
    "TemplateFiles",
    "check_render_step",
    "keep_xcom_values_literal",
    "looks_like_file_name",
    "render_text",
    "template_search_path",
    "values_from_xcom",
]

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


class XComValuesAsData(_Base):
    """
    Mixin for an operator whose fields may come from an XCom: such text is data, never a template.

    Overrides Airflow's per-object rendering step (guarded by :func:`check_render_step`) to add the
    ids of the values that came from an XCom to ``seen_oids``, which Airflow then leaves as they are.
    """

    def _do_render_template_fields(
        self,
        parent: Any,
        template_fields: Iterable[str],
        context: Context,
        jinja_env: jinja2.Environment,
        seen_oids: set[int],
    ) -> None:
        if parent is self:
            seen_oids = seen_oids | keep_xcom_values_literal(self, context)
            self.found_xcom_values(context)
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)

    def found_xcom_values(self, context: Context) -> None:
        """Called once per rendering, after the template fields from an XCom were resolved."""


def _not_found_reason(value: str, env: jinja2.Environment) -> str:
    where = template_search_path(env)
    place = f"the template search path {where}" if where else "a template folder (there is no search path)"
    return (
        f"{value!r} looks like a template file name (no white space, ends with "
        f"{value[value.rfind('.') :]!r}) but is not in {place}. Put the file there (or add its folder to "
        f"the DAG's template_searchpath); to send the words as text, write {{{{ {value!r} }}}}."
    )


# -- values from an XCom are data ----------------------------------------------------------------

#: The parameters of the task SDK's per-object rendering step (``Templater._do_render_template_fields``,
#: the same in 3.1 and 3.3), which the send and bulk operators override to pass
#: ``keep_xcom_values_literal``'s ids into ``seen_oids``.
RENDER_STEP = "_do_render_template_fields"
RENDER_STEP_PARAMETERS = ("self", "parent", "template_fields", "context", "jinja_env", "seen_oids")


def check_render_step(base: type) -> None:
    """
    Raise when ``base`` no longer has Airflow's private rendering step with the parameters above.

    An override of a step that was renamed or changed would silently never run, and text from an
    XCom would be rendered as a template; this makes that a loud error at import instead.
    """
    import inspect

    step = getattr(base, RENDER_STEP, None)
    found = tuple(inspect.signature(step).parameters) if callable(step) else None
    if found != RENDER_STEP_PARAMETERS:
        from importlib.metadata import version

        raise AirflowException(
            f"This Airflow ({version('apache-airflow-core')}) renders templates differently from what "
            f"vantax-provider supports ({base.__name__}.{RENDER_STEP} has parameters {found}, expected "
            f"{RENDER_STEP_PARAMETERS}). Use a supported Airflow version (see docs/compatibility.md)."
        )


def keep_xcom_values_literal(task: Any, context: Mapping[str, Any]) -> set[int]:
    """
    Resolve ``task``'s template fields that come from an XCom; return the ids of their values.

    The caller adds the ids to the ``seen_oids`` of Airflow's template rendering, so that text which
    arrived from an upstream task (a customer's name holding ``{{ ... }}``) is sent as it is, never
    rendered as a template.  Which values count as from an XCom: see :func:`values_from_xcom`.
    """
    values = {name: getattr(task, name, None) for name in task.template_fields}
    names = values_from_xcom(task, context, values)
    for name in names:
        if values[name] is not getattr(task, name, None):  # an XComArg, resolved
            setattr(task, name, values[name])
    return {id(values[name]) for name in names if values[name] is not None}


def values_from_xcom(task: Any, context: Mapping[str, Any], values: MutableMapping[str, Any]) -> set[str]:
    """
    The names among ``values`` (``task``'s init arguments, by name) whose values came from an XCom.

    An XComArg among ``values`` is resolved in place (Airflow leaves one that sits in a literal
    ``expand_kwargs`` dict unresolved).  Covers every mapping form: ``expand`` and ``expand_kwargs``
    with an XComArg, with a literal list of XComArgs, with literal dicts holding XComArgs, ``.map()``
    results, and XComArgs given to ``partial`` or to a plain operator.  A literal list given to
    ``expand`` and a literal dict's literal values are the DAG author's: not from an XCom.

    Relies on these Airflow task-SDK internals (the same in 3.1 and 3.3); any change raises
    :class:`AirflowException` naming it, rather than rendering customer text by mistake:

    - a mapped task instance renders an unmapped copy of the task, while ``context["dag"].task_dict``
      still holds the ``MappedOperator`` (``airflow.sdk.definitions.mappedoperator``);
    - ``MappedOperator._get_specified_expand_input()`` returns a ``DictOfListsExpandInput`` (from
      ``expand``) or a ``ListOfDictsExpandInput`` (from ``expand_kwargs``), whose ``value`` is what
      the DAG passed, and ``MappedOperator.partial_kwargs`` holds what ``partial`` was given;
    - Airflow itself leaves values from ``expand(name=<XComArg>)`` unrendered but renders every
      value of a dict that ``expand_kwargs`` took from an XCom: both are handled here.
    """
    from airflow.sdk import XComArg

    mapped = _mapped_operator(task, context)
    names = (
        set() if mapped is None else _mapped_names_from_xcom(task, mapped, context, values) & values.keys()
    )
    for name, value in values.items():
        if isinstance(value, XComArg):  # partial(), a plain operator, or a literal expand_kwargs dict
            values[name] = value.resolve(context)
            names.add(name)
    return names


def _internals_changed(task: Any, what: str) -> AirflowException:
    from importlib.metadata import version

    return AirflowException(
        f"Task {getattr(task, 'task_id', '?')!r}: this Airflow ({version('apache-airflow-core')}) maps "
        f"tasks differently from what vantax-provider supports ({what}), so it cannot tell which values "
        "came from an XCom and must not be rendered as templates. Use a supported Airflow version "
        "(see docs/compatibility.md)."
    )


def _mapped_operator(task: Any, context: Mapping[str, Any]) -> Any:
    """The MappedOperator ``task`` was unmapped from, or None when the task is not mapped."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = context.get("dag")
    task_dict = getattr(dag, "task_dict", None)
    if dag is None:
        return None
    if not isinstance(task_dict, Mapping):
        raise _internals_changed(task, "the DAG in the context has no task_dict")
    node = task_dict.get(task.task_id)
    return node if isinstance(node, MappedOperator) else None


def _mapped_names_from_xcom(
    task: Any, mapped: Any, context: Mapping[str, Any], values: Mapping[str, Any]
) -> set[str]:
    from airflow.sdk import XComArg
    from airflow.sdk.definitions._internal.expandinput import DictOfListsExpandInput, ListOfDictsExpandInput

    try:
        expand_input = mapped._get_specified_expand_input()
        partial: Mapping[str, Any] = mapped.partial_kwargs
        value = expand_input.value
    except AttributeError as exc:
        missing = exc.name or "expected attribute"
        raise _internals_changed(task, f"the mapped operator has no {missing}") from exc
    if isinstance(expand_input, DictOfListsExpandInput):
        # expand(): a literal list is the author's; anything else (XComArg, .map(), zip) is data.
        return {k for k, v in value.items() if isinstance(v, XComArg) or not isinstance(v, Sized)}
    if not isinstance(expand_input, ListOfDictsExpandInput):
        raise _internals_changed(task, f"unknown expand input {type(expand_input).__name__}")
    if isinstance(value, Sized):  # a literal list: of dicts (the author's) or of XComArgs (data)
        map_index = getattr(context.get("ti"), "map_index", None)
        if not isinstance(map_index, int) or not 0 <= map_index < len(value):
            raise _internals_changed(task, f"map_index {map_index!r} outside the expand_kwargs list")
        item = value[map_index]  # type: ignore[index]
        if isinstance(item, Mapping):
            return {k for k, v in item.items() if isinstance(v, XComArg)}
    # The whole dict came from an XCom: every value not set by partial() (strict=False may override it).
    return {n for n, v in values.items() if n not in partial or v is not partial[n]}


def render_text(templater: Any, template: Any, context: Mapping[str, Any]) -> Any:
    """
    Render a Jinja ``template`` the way ``templater`` renders its string fields (as text or native).

    Relies on ``Templater._render(template, context)`` (Airflow 3.1 and 3.3), which picks native or
    string rendering from the operator's or DAG's ``render_template_as_native_obj``.
    """
    render = getattr(templater, "_render", None)
    if render is None:
        raise AirflowException(
            f"{type(templater).__name__}: this Airflow's templates have no _render(template, context); "
            "vantax-provider cannot render a field as text. Use a supported Airflow version."
        )
    return render(template, context)
