"""Command-line flags generated from config dataclasses (one source of truth for defaults and help).

Every stage's config is a dataclass whose docstring documents its fields in an ``Attributes:``
section, as trl's configs do. :func:`add_dataclass_args` turns each field into ``--field-name``
with that text as help, and :func:`dataclass_from_args` builds the config back.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import re
import types
import typing
from pathlib import Path


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


def nested(cls, flags: tuple[str, ...] | None = None, aliases: dict[str, tuple[str, ...]] | None = None):
    """A config field holding a ``cls`` config whose fields become flags of the outer command.

    ``flags``: the nested fields that get a flag, each under its own name (``--steps``, not
    ``--sampler-steps``, so that the commands keep their flags); None means all of them.
    ``aliases``: extra flag names, e.g. ``{"scheduler": ("--sampler",)}``. Help comes from ``cls``'s
    docstring. Python callers pass a ``cls`` instance (default: ``cls()``)."""
    return dataclasses.field(default_factory=cls, metadata={"flatten": flags, "aliases": aliases or {}, "cls": cls})


def _is_nested(f) -> bool:
    return "flatten" in f.metadata


def flat_fields(cls) -> list[tuple[str | None, type, dataclasses.Field]]:
    """The settings a command exposes, as ``(nested field or None, owning class, field)``: ``cls``'s
    init fields, with each :func:`nested` field replaced by the nested fields it flattens."""
    out, seen = [], set()
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if not _is_nested(f):
            out.append((None, cls, f))
            seen.add(f.name)
            continue
        inner = f.metadata["cls"]  # not default_factory(): building flags must run no __post_init__
        wanted = f.metadata["flatten"]
        for g in dataclasses.fields(inner):
            if g.init and (wanted is None or g.name in wanted):
                out.append((f.name, inner, g))
    names = [g.name for _, _, g in out]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise TypeError(f"{cls.__name__}: nested config fields clash with its own: {clash}")
    return out


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _required(f) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per field of ``cls`` (nested configs flattened), and ``--config FILE``.

    A flag's default is SUPPRESS, so that :func:`dataclass_from_args` can tell a flag given on the
    command line (which wins) from the YAML file's value and the dataclass default; required fields
    are checked there too, as they may come from the file."""
    if not any("--config" in a.option_strings for a in parser._actions):
        parser.add_argument("--config", metavar="FILE",
                            help="YAML file of this command's settings (the keys are the flag names, with _ or -); "
                                 "flags given on the command line override it")
    docs = {}
    for nest, owner, f in flat_fields(cls):
        if f.name in skip or (nest is not None and nest in skip):
            continue
        if owner not in docs:
            docs[owner] = field_docs(owner)
        tp = _base_type(typing.get_type_hints(owner)[f.name])
        flags = ["--" + f.name.replace("_", "-")]
        if nest is not None:
            outer = next(g for g in dataclasses.fields(cls) if g.name == nest)
            flags += list(outer.metadata["aliases"].get(f.name, ()))
        default = _default(f)
        # reST markup (``x``, :mod:`x`) is for the API docs: the terminal shows plain text
        help_text = re.sub(r":\w+:`([^`]*)`", r"\1", docs[owner].get(f.name, "")).replace("``", "").replace("%", "%%")
        is_required = f.name in required or _required(f)
        help_text += " (required, here or in --config)" if is_required else f" (default: {default})"
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if tp is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(tp) in (list, tuple):
            parser.add_argument(*flags, nargs="+", type=(typing.get_args(tp) or (str,))[0], **kw)
        else:
            parser.add_argument(*flags, type=tp, **kw)
    parser.set_defaults(**{"_required_" + cls.__name__: tuple(required)})


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    """``cls`` from its defaults, then the ``--config`` YAML file, then the flags given, then
    ``overrides``; nested configs are rebuilt from their flattened settings."""
    path = getattr(args, "config", None)
    values = load_yaml_config(path, cls) if path else {}
    fields = flat_fields(cls)
    values.update({f.name: vars(args)[f.name] for _, _, f in fields if f.name in vars(args)})
    required = set(getattr(args, "_required_" + cls.__name__, ()))
    missing = [f.name for nest, _, f in fields if nest is None and (_required(f) or f.name in required)
               and f.name not in values and f.name not in overrides]
    if missing:
        raise ValueError(f"no {', '.join(missing)}: set them in the --config file or as "
                         f"--{missing[0].replace('_', '-')} ...")
    return build_dataclass(cls, values, **overrides)


def build_dataclass(cls, values: dict, **overrides):
    """``cls(**values)`` where ``values`` are flat settings (those of nested configs among them)."""
    check_finite(values)
    kwargs, inner = {}, {}
    for nest, _, f in flat_fields(cls):
        if f.name in values:
            (kwargs if nest is None else inner.setdefault(nest, {}))[f.name] = values[f.name]
    for nest, given in inner.items():
        outer = next(g for g in dataclasses.fields(cls) if g.name == nest)
        kwargs[nest] = dataclasses.replace(outer.default_factory(), **given)
    kwargs.update(overrides)
    return cls(**kwargs)


def flat_asdict(cfg) -> dict:
    """``dataclasses.asdict`` with each :func:`nested` config's flattened fields at the top level,
    named as their flags: the shape metrics files and resume guards had before the nesting."""
    out = {}
    for nest, _, f in flat_fields(type(cfg)):
        value = getattr(cfg if nest is None else getattr(cfg, nest), f.name)
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return out


def yaml_safe_load(text: str):
    """``yaml.safe_load`` through libyaml's parser where PyYAML was built with it (the same objects:
    the tags are resolved in Python either way) and several times faster: parsing the shipped
    concepts.yaml is a fixed cost of every command that builds EmojiWorld prompts (BENCHMARKS.md,
    "Building the evaluation suites")."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_yaml_config(path, cls) -> dict:
    """Read a YAML config file into ``cls``'s (flattened) field values; unknown keys are an error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file {path}")
    try:
        raw = yaml_safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of {cls.__name__} keys, got {type(raw).__name__}")
    raw = {str(k).replace("-", "_"): v for k, v in raw.items()}
    owners = {f.name: owner for _, owner, f in flat_fields(cls)}
    for f in dataclasses.fields(cls):  # the aliases of nested fields (e.g. sampler: for scheduler:)
        if _is_nested(f):
            for name, alias in f.metadata["aliases"].items():
                for a in alias:
                    key = a.lstrip("-").replace("-", "_")
                    if key in raw and key not in owners:
                        raw[name] = raw.pop(key)
    unknown = sorted(set(raw) - set(owners))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; see the command's --help")
    return {k: _coerce(owners[k], k, v, path) for k, v in raw.items()}


def _coerce(cls, name: str, value, path):
    """YAML reads ``1e-5`` as a string (YAML 1.1 wants ``1.0e-5``): convert to the field's type."""
    tp = _base_type(typing.get_type_hints(cls)[name])
    if value is None or typing.get_origin(tp) in (list, tuple):
        return value
    try:
        if tp is bool and not isinstance(value, bool):
            raise ValueError
        return tp(value) if tp in (int, float, str) else value
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {name} must be a {getattr(tp, '__name__', tp)}, got {value!r}") from err


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
