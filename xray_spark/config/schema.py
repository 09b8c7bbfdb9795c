"""The settings schema: each key's type, default, bounds and comment declared together, on its dataclass field.

A key is declared ``name: type = setting(default, "what it is", ge=..., le=..., choices=...)``.
Parsing (:mod:`xray_spark.config`) coerces the type and then checks the bounds and choices
here, so every key's refusal reads the same way ("configuration key 'image.size' must lie in
[8, 4096], got 2"). A rule that joins several keys of one section is that section's
``check()`` method, beside its fields; the few that join sections live in
:mod:`xray_spark.config.rules`.

:func:`json_schema` gives the whole schema as JSON Schema (``conf/settings.schema.json``,
for editors; a test keeps the file current and checks ``conf/*.yaml`` against the settings).

Why not pydantic: the settings are frozen dataclasses that every job, test and Spark task
builds, pickles, compares and ``dataclasses.replace``-s; a field specifier on them gives the
one schema (types, defaults, bounds, comments, JSON Schema) without a second class
hierarchy, another set of error messages, or a compiled dependency on every executor.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from xray_spark.errors import ConfigError


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[str] | None = None,
    path: bool = False,
) -> Any:
    """A settings field: its default (or ``factory``), its comment, and the bounds or choices its value must keep.

    ``path``: a file or folder, made absolute when loaded (:mod:`xray_spark.config.places`): a relative
    default is under the product's home, a relative value in a file is relative to that file."""
    metadata = {
        "doc": doc,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "choices": tuple(choices) if choices else None,
        "path": path,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _either(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def check_field(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    """Refuse ``value`` of ``key`` outside its declared choices or bounds, naming the key, the rule and the value."""
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"configuration key {key!r} must be {_either(choices)}, got {value!r}")
    ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
    if all(bound is None for bound in (ge, gt, le, lt)) or not isinstance(value, int | float):
        return
    low_ok = (ge is None or value >= ge) and (gt is None or value > gt)
    high_ok = (le is None or value <= le) and (lt is None or value < lt)
    if low_ok and high_ok:
        return
    low = f"[{_number(ge)}" if ge is not None else f"({_number(gt)}" if gt is not None else None
    high = f"{_number(le)}]" if le is not None else f"{_number(lt)})" if lt is not None else None
    if low and high:
        rule = f"must lie in {low}, {high}"
    elif gt == 0:
        rule = "must be positive"
    elif ge is not None:
        rule = f"must be at least {_number(ge)}"
    elif gt is not None:
        rule = f"must be above {_number(gt)}"
    else:
        rule = f"must be at most {_number(le)}" if le is not None else f"must be below {_number(lt)}"
    raise ConfigError(f"configuration key {key!r} {rule}, got {_number(value)}")


def field_doc(cls: type, name: str) -> str:
    return next(f.metadata.get("doc", "") for f in dataclasses.fields(cls) if f.name == name)


def json_schema(cls: type, title: str = "xray-spark settings") -> dict[str, Any]:
    """The settings dataclass ``cls`` as JSON Schema (draft 2020-12): types, defaults, bounds, choices, comments."""
    schema = _object_schema(cls)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **schema}


def _object_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties = {}
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name])
        meta = f.metadata
        if meta.get("doc"):
            prop["description"] = meta["doc"]
        if not dataclasses.is_dataclass(hints[f.name]):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            prop["default"] = default
        for ours, theirs in (
            ("ge", "minimum"),
            ("gt", "exclusiveMinimum"),
            ("le", "maximum"),
            ("lt", "exclusiveMaximum"),
        ):
            if meta.get(ours) is not None:
                prop[theirs] = meta[ours]
        if meta.get("choices"):
            prop["enum"] = list(meta["choices"])
        properties[f.name] = prop
    doc = (cls.__doc__ or "").strip()
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if doc and not doc.startswith(f"{cls.__name__}("):
        out["description"] = " ".join(doc.split())
    return out


def _type_schema(hint: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(hint):
        return _object_schema(hint)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return {"anyOf": [_type_schema(option) for option in typing.get_args(hint)]}
    if origin is list:
        return {"type": "array", "items": _type_schema(typing.get_args(hint)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(typing.get_args(hint)[1])}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return {"type": simple[hint]}
