"""Settings as strict typed models, and one line for a configuration that does not validate.

Every settings file (``config.toml``, encoder cards and their ``[params]``, task cards, the pretraining
config) is read into a :class:`Settings` model: unknown keys are refused and values are never coerced from
another type, so a typo is an error and not a default silently kept.

Pydantic reports a list of errors with its own wording and with union members and tags in the location; a
user needs one line that names the file, the key path as written in the TOML (``datasets.deeplesion.roots``)
and what was expected (a type, one of some values, or the allowed keys).
:func:`validate_settings` reads data into a model and raises that line as an :class:`InputError`;
:func:`describe_validation_error` gives the same text without a file, for callers that add it later.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from clearbench.errors import ClearbenchError, InputError

M = TypeVar("M", bound=BaseModel)


class Settings(BaseModel):
    """The base of every settings model: unknown keys refused, no type coercion (an integer is still a number),
    immutable once read."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Loc = Sequence[str | int]

# What a pydantic error type expected, in the words the rest of clearbench uses.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}
# A tagged union's errors when the tag itself is missing or names no member.
_TAG_ERRORS = ("union_tag_invalid", "union_tag_not_found")
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def validate_settings(
    model: type[M], data: Any, source: str | Path | None, *, prefix: Loc = (), hint: str | None = None
) -> M:
    """``data`` read into ``model``; anything wrong is one :class:`InputError` naming ``source`` and the key.

    ``prefix`` is where ``data`` sits in its file (``("params",)`` for a card's ``[params]`` table), so the
    key path in the message is the one the user wrote; ``hint`` is appended as what to do next. Without a
    ``source`` (data that did not come from a file) it is a :class:`ClearbenchError`, which the caller may
    put a source in front of.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        line = describe_validation_error(exc, model, prefix=prefix, hint=hint)
        raise (ClearbenchError(line) if source is None else InputError(source, line)) from None


def describe_validation_error(
    exc: ValidationError, model: type[BaseModel], *, prefix: Loc = (), hint: str | None = None
) -> str:
    """``field 'a.b': expected an integer, got 'x'`` for the first bad key (and how many more there are).

    Errors at the same key (each member of a union failing) are merged: ``expected a table or a string``.
    """
    by_loc: dict[tuple[str | int, ...], list[dict[str, Any]]] = {}
    for error in exc.errors(include_url=False):
        loc = _display_path(model, error["loc"])
        if error["type"] in _TAG_ERRORS:  # a table whose tag key (``kind``, ``head``) is wrong: name that key
            loc.append(error["ctx"]["discriminator"].strip("'"))
        by_loc.setdefault(tuple(loc), []).append(dict(error))
    # A union member that got further (a table whose key is wrong) says more than one refused at the top.
    by_path = {
        ".".join(str(p) for p in (*prefix, *loc)): errors
        for loc, errors in by_loc.items()
        if not any(len(other) > len(loc) and other[: len(loc)] == loc for other in by_loc)
    }
    path, errors = next(iter(by_path.items()))
    line = (f"field '{path}': " if path else "") + _reason(model, errors)
    if len(by_path) > 1:
        line += f" (and {len(by_path) - 1} more problem{'s' if len(by_path) > 2 else ''})"
    return f"{line}; {hint}" if hint else line


def _reason(model: type[BaseModel], errors: list[dict[str, Any]]) -> str:
    kinds = {e["type"] for e in errors}
    if "extra_forbidden" in kinds:
        allowed = _model_at(model, errors[0]["loc"][:-1])
        known = ", ".join(sorted(allowed.model_fields)) if allowed is not None else ""
        return "unknown key" + (f"; allowed keys are {known}" if known else "")
    if kinds & {"missing", "union_tag_not_found"}:
        return "missing"
    if "union_tag_invalid" in kinds:
        ctx = errors[0]["ctx"]
        tags = ctx["expected_tags"].replace("'", "")
        return f"expected one of {tags}, got {ctx['tag']!r}"
    custom = [e for e in errors if e["type"] == "value_error"]
    if custom:
        return str(custom[0]["ctx"]["error"])
    expected: list[str] = []
    for e in errors:
        text = _expected(e)
        if text not in expected:
            expected.append(text)
    return f"expected {' or '.join(expected)}, got {errors[0]['input']!r}"


def _expected(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "literal_error":
        return f"one of {ctx['expected'].replace(' or ', ', ')}"
    if kind in _BOUNDS:
        bound = next(iter(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")))
        return f"a value {_BOUNDS[kind]} {bound}"
    if kind == "string_too_short":
        return "a non-empty string"
    if kind == "too_short":
        return "a non-empty list"
    msg = str(error["msg"])
    return msg[0].lower() + msg[1:]


def _display_path(model: type[BaseModel], loc: Loc) -> list[str | int]:
    """``loc`` without what pydantic adds for unions (member names, tags): the keys as written in the file."""
    out: list[str | int] = []
    annotation: Any = model
    for item in loc:
        annotation = _unwrap(annotation)
        if _is_union(annotation):
            annotation = _union_member(annotation, item)
            continue
        out.append(item)
        annotation = _child(annotation, item)
    return out


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model whose keys sit at ``loc`` (pydantic's location), or None when it is not a model."""
    annotation: Any = model
    for item in loc:
        annotation = _unwrap(annotation)
        annotation = _union_member(annotation, item) if _is_union(annotation) else _child(annotation, item)
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and without the ``None`` of ``X | None``: pydantic validates that as
    a nullable ``X``, with no union step in its error locations (``("dims", 3)`` for an item of a list)."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        members = [a for a in get_args(annotation) if a is not type(None)] if _is_union(annotation) else []
        if len(members) == 1 and len(get_args(annotation)) == 2:
            annotation = members[0]
            continue
        return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _child(annotation: Any, item: str | int) -> Any:
    """The annotation one step down: a model's field, a dict's value, a list's item."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(item))
        return field.annotation if field is not None else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, tuple, Sequence) and args:
        return args[0]
    return None


def _union_member(annotation: Any, item: str | int) -> Any:
    """The member of a union that pydantic's location step ``item`` names: a model by its class name or by
    the value of its ``Literal`` tag field; None for other members (``str``, ``int``: leaves)."""
    for candidate in get_args(annotation):
        member = _unwrap(candidate)
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        if member.__name__ == item:
            return member
        for field in member.model_fields.values():
            if get_origin(field.annotation) is Literal and item in get_args(field.annotation):
                return member
    return None
