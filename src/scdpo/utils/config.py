"""Command-line flags generated from config dataclasses (one source of truth for defaults and help).

Every stage's config is a dataclass whose docstring documents its fields in an ``Attributes:``
section, as trl's configs do. :func:`add_dataclass_args` turns each field into ``--field-name``
with that text as help, and :func:`dataclass_from_args` builds the config back.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    return cls(**values)
