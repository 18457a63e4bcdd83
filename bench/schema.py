"""Config primitives: `ConfigError`, `opt` fields, building a dataclass from a dict with one-line
errors, describing fields, hashing, parsing and formatting `key=value` values.

The base of the stack: this module imports nothing from the project, so `models/`, `tasks/` and
`bench/config.py` can all declare their config sections with it.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import field, fields, is_dataclass
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A bad config value; the message is one line naming the field and what is allowed."""


def opt(default: Any, *, choices=None, ge=None, gt=None, lt=None, le=None, help: str = "",
        new: bool = False, hash_as: Optional[dict] = None, none_is_null: bool = False):
    """A config field with its allowed values. `choices` may be a callable (late-bound registry).

    `new=True` marks a field added after runs were stored: while it holds its default it is left
    out of the config hash, so adding it changes no existing run's hash (every field added from
    now on sets it). `hash_as` maps a value to the value hashed in its place, for a value that names
    no run of its own (trainer.accelerator=auto hashes as cpu, the default the stored runs have).
    `none_is_null=True` on an optional text field: the text `None` means null there (see `null_text`)."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "lt": lt, "le": le, "help": help, "new": new,
            "hash_as": hash_as or {}, "none_is_null": none_is_null}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_default(f: dataclasses.Field):
    """A dataclass field's default value (calling its factory)."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _type_ok(value, tp) -> tuple[bool, Any]:
    """Check (and gently coerce int->float) a value against a simple type hint."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        for a in args:
            if a is not type(None):
                ok, v = _type_ok(value, a)
                if ok:
                    return True, v
        return False, value
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)), list(value) if isinstance(value, (list, tuple)) else value
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is Any:
        return True, value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        return False, value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def null_text(f: dataclasses.Field, tp, value) -> bool:
    """Whether `value` is the text `None` standing for null: what `wandb agent` passes for a null
    sweep value (`--key=None`, Python's str(None)), where YAML's null is `null`. Only on an optional
    field that cannot mean the text: one whose other types have no str (int, float, list: the text
    was an error there), or an optional text field marked `none_is_null` (a path, a hub name, a
    metric name). Other text fields keep the text "None" (a label or a column may be called so)."""
    if not isinstance(value, str) or value != "None" or typing.get_origin(tp) is not typing.Union:
        return False
    args = typing.get_args(tp)
    choices = f.metadata.get("choices")
    if type(None) not in args or (isinstance(choices, (list, tuple)) and "None" in choices):
        return False
    return str not in args or bool(f.metadata.get("none_is_null"))


def _type_name(tp) -> str:
    if typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _check_field(f, value, path: str):
    meta = f.metadata
    choices = meta.get("choices")
    if callable(choices):
        choices = choices()
    if choices is not None and value is not None and value not in choices:
        raise ConfigError(f"{path}: invalid value {value!r}; allowed: {', '.join(map(str, choices))}")
    if value is None or isinstance(value, (bool, str, list, dict)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        bounds = [f"{w} {meta[k]}" for k, w in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                  if meta.get(k) is not None]
        raise ConfigError(f"{path}: invalid value {value!r}; allowed: a finite number{' ' if bounds else ''}"
                          f"{' and '.join(bounds)}")
    for key, test, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(key)
        if bound is not None and not test(value, bound):
            raise ConfigError(f"{path}: invalid value {value!r}; allowed: a number {word} {bound}")


def build(cls, data: Optional[dict], path: str = ""):
    """Make a `cls` dataclass from a plain dict, rejecting unknown keys and bad values.

    Hooks: `cls.prepare(data, path) -> dict` runs first (presets), `obj.check(path)` last
    (cross-field rules). Both raise ConfigError.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    data = dict(data or {})
    if hasattr(cls, "prepare"):
        data = cls.prepare(data, path)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"{path}{key}: unknown key; allowed: {', '.join(names)}")
    values = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value, tp, fpath = data[f.name], hints[f.name], path + f.name
        if null_text(f, tp, value):
            value = None
        if is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{fpath}: expected a mapping, got {value!r}")
            values[f.name] = build(tp, value, fpath + ".")
            continue
        ok, value = _type_ok(value, tp)
        if not ok:
            choices = f.metadata.get("choices")
            choices = choices() if callable(choices) else choices
            allowed = ", ".join(map(str, choices)) if choices else _type_name(tp)
            raise ConfigError(f"{fpath}: invalid value {data[f.name]!r}; allowed: {allowed}")
        _check_field(f, value, fpath)
        values[f.name] = value
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def describe(cls, prefix: str = "", skip: tuple = ()) -> list[str]:
    """One line per field, `key = default  [type] one of ...  help`, nested dataclass sections
    flattened with dotted keys; fields named in `skip` are left out (`rnnbench config --fields`)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in sorted(fields(cls), key=lambda f: f.name != "name"):   # a family's `name` first, then as declared
        if f.name in skip:
            continue
        tp = hints[f.name]
        if is_dataclass(tp):
            out += describe(tp, f"{prefix}{f.name}.")
            continue
        choices = f.metadata.get("choices")
        choices = choices() if callable(choices) else choices
        extra = f" one of {', '.join(map(str, choices))}" if choices else ""
        out.append(f"{prefix}{f.name} = {field_default(f)!r}  [{_type_name(tp)}]{extra}  "
                   f"{f.metadata.get('help', '')}".rstrip())
    return out


# ---------------------------------------------------------------- hashing


def hash_view(obj) -> dict:
    """The dict a config is hashed from: `asdict`, less `new` fields still at their defaults."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            out[f.name] = hash_view(value)
            continue
        if f.metadata.get("new") and value == field_default(f):
            continue
        alias = f.metadata.get("hash_as") or {}
        out[f.name] = copy.deepcopy(alias.get(value, value) if isinstance(value, str) else value)
    return out


def config_hash(d: dict, n: int = 12) -> str:
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# ---------------------------------------------------------------- values as text


def parse_value(text: str):
    """Parse an override value as YAML (so lists/dicts/null work); `1e-3` is a float."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".e") and not value.isalpha() else value
        except ValueError:
            return value
    return value


def fmt_value(v, digits: Optional[int] = None) -> str:
    """A config value as `key=value` text that `parse_value` reads back.

    `digits=None`: exact (reproduce commands: the value parses back to itself). `digits=n`: short,
    for labels and titles: floats to n significant digits (kept float-looking), compact JSON."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and digits is not None:
        text = f"{v:.{digits}g}"
        return text + ".0" if text.lstrip("-").isdigit() else text
    if isinstance(v, (list, dict)):
        return json.dumps(v) if digits is None else json.dumps(v, separators=(",", ":"))
    return str(v)
