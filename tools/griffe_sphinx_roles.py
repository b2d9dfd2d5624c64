"""A griffe extension for the API reference page: Sphinx roles in docstrings become links.

The docstrings cross-reference with Sphinx roles (``:class:`VantaxError```, ``:meth:`send_message```,
``:class:`~vantax_provider.exceptions.VantaxError```).  Griffe's Sphinx parser reads ``:param:``
fields but leaves such roles in the text, so this extension rewrites each one, once the package is
loaded, into an mkdocs-autorefs link when its target is an object the reference page renders, and
into plain code otherwise (private helpers, other libraries).  A link to something the page does not
render would fail the strict build, so the page itself (``docs/reference.md``, its ``::: path``
lines) decides what may be linked.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|exc|data|obj|mod):`(~?)([^`]+)`")
DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)
REFERENCE_PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles into autorefs links or code."""

    def __init__(self, package: str = "vantax_provider") -> None:
        super().__init__()
        self.package = package

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != self.package:
            return
        # Rendered object: where the code defines it (canonical path) -> where the page shows it.
        published: dict[str, str] = {}
        for public in DIRECTIVE.findall(REFERENCE_PAGE.read_text(encoding="utf-8")):
            if public == pkg.path or public.startswith(pkg.path + "."):
                published[_canonical(pkg, public)] = public
        for obj in _walk(pkg):
            if isinstance(obj, griffe.Class) and "__init__" not in obj.members and _is_pydantic(obj):
                _add_pydantic_signature(obj)
            if obj.docstring is not None:
                rewrite = partial(_rewrite, obj, published=published)
                obj.docstring.value = ROLE.sub(rewrite, obj.docstring.value)


def _canonical(pkg: griffe.Module, path: str) -> str:
    obj: Any = pkg
    for part in path.split(".")[1:]:
        obj = obj.members[part]
        if isinstance(obj, griffe.Alias):
            obj = obj.final_target
    return str(obj.path)


def _is_pydantic(cls: griffe.Class) -> bool:
    return any(str(base).rsplit(".", 1)[-1] == "BaseModel" for base in cls.bases)


def _add_pydantic_signature(cls: griffe.Class) -> None:
    """A pydantic model takes its fields as keyword arguments: show them as the signature, so the
    ``:param:`` fields of its docstring match parameters as they do for any other class."""
    fields = [
        griffe.Parameter(
            name, annotation=attr.annotation, kind=griffe.ParameterKind.keyword_only, default=attr.value
        )
        for name, attr in cls.attributes.items()
        if attr.annotation is not None
        and not name.startswith("_")
        and name != "model_config"
        and "ClassVar" not in str(attr.annotation)
    ]
    self = griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)
    init = griffe.Function("__init__", parameters=griffe.Parameters(self, *fields), returns="None")
    cls.set_member("__init__", init)


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not isinstance(member, griffe.Alias):
            yield from _walk(member)


def _rewrite(obj: griffe.Object, match: re.Match[str], *, published: dict[str, str]) -> str:
    short, written = match.group(1) == "~", match.group(2)
    shown = f"`{written.rsplit('.', 1)[-1] if short else written}`"
    target = _public_path(obj, written, published)
    return f"[{shown}][{target}]" if target else shown


def _public_path(obj: griffe.Object, written: str, published: dict[str, str]) -> str | None:
    head, _, rest = written.partition(".")
    try:
        resolved = written if written.startswith("vantax_provider.") else obj.resolve(head)
    except (griffe.NameResolutionError, KeyError):
        return None
    if not written.startswith("vantax_provider.") and rest:
        resolved = f"{resolved}.{rest}"
    root = obj.module.package
    try:
        target = _canonical(root, resolved)
    except (KeyError, griffe.AliasResolutionError):
        return None
    for canonical, public in published.items():
        if target == canonical:
            return public
        if target.startswith(canonical + "."):
            member = root[target.removeprefix(root.path + ".")]
            # The page renders public members with a docstring only (mkdocs.yml): others have no anchor.
            suffix = target.removeprefix(canonical)
            return public + suffix if member.docstring and "._" not in suffix else None
    return None
