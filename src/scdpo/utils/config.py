"""Command-line flags generated from config dataclasses (one source of truth for defaults and help).

Every stage's config is a dataclass whose docstring documents its fields in an ``Attributes:``
section, as trl's configs do. :func:`add_dataclass_args` turns each field into ``--field-name``
with that text as help, and :func:`dataclass_from_args` builds the config back.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing


def field_docs(cls) -> dict[str, str]:
    """Field descriptions from the class docstring's ``Attributes:`` section."""
    doc = cls.__doc__ or ""
    if "Attributes:" not in doc:
        return {}
    section = doc.split("Attributes:", 1)[1]
    docs, current = {}, None
    for line in section.splitlines():
        # "name:" or "a, b:" at the field indent; a continuation line ending a phrase in ":" is not one
        m = re.match(r"^\s{4,8}([a-z_][a-z_0-9]*(?:, [a-z_][a-z_0-9]*)*):\s*(.*)$", line)
        if m:
            names = [n.strip() for n in m.group(1).split(",")]
            current = names
            for n in names:
                docs[n] = m.group(2).strip()
        elif current and line.strip():
            for n in current:
                docs[n] += " " + line.strip()
    return docs


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> None:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    # a parser with ArgumentDefaultsHelpFormatter appends "(default: ...)" itself: once is enough
    shown = issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = docs.get(f.name, "")
        is_required = f.name in required or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(tp) in (list, tuple):
            inner = (typing.get_args(tp) or (str,))[0]
            parser.add_argument(flag, nargs="+", type=inner, default=default, required=is_required,
                                help=help_text if shown else f"{help_text} (default: {default})")
        else:
            parser.add_argument(flag, type=tp, default=default, required=is_required,
                                help=help_text if shown or is_required else f"{help_text} (default: {default})")


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides)
    check_finite(values)
    return cls(**values)


def check_finite(values, prefix: str = "") -> None:
    """Refuse NaN and infinity in any float setting: ``values`` is a config dataclass or a mapping of
    field values (lists, tuples and nested dataclasses are walked).  Every command builds its config
    through :func:`dataclass_from_args` (or, for `scdpo train`, its YAML loader), which calls this, so
    one check covers every stage: `--lr inf` or `lambda_lr: .nan` would otherwise run, silently
    producing NaN weights or turning a constraint off (comparisons with NaN are all False)."""
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        values = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
    for name, value in values.items():
        _check_value(value, prefix + name)


def _check_value(value, name: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_value(v, name)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_value(v, f"{name}.{k}")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        check_finite(value, prefix=name + ".")
