"""Values against the type annotations of a config dataclass: what ``--set``, a TOML file or a Python caller
gave is checked before any value check compares it (``"False"`` is not ``false``, ``2.5`` not an integer)."""

from __future__ import annotations

import numbers
import os
import types
import typing
from dataclasses import fields

_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _conform(value, hint) -> tuple[bool, typing.Any]:
    """``(True, value)`` with ``value`` in the type ``hint`` (an int passes for a float; a NumPy number
    becomes Python's, a path a str), else ``(False, value)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, out = _conform(value, arg)
            if ok:
                return True, out
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint in (int, float):  # bool is an Integral too, and never meant as a number here
        ok = isinstance(value, numbers.Integral if hint is int else numbers.Real) and not isinstance(value, bool)
        return ok, value if not ok or type(value) in (int, float) else hint(value)  # NumPy's: Python's own
    if hint is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return isinstance(value, str), value
    if typing.get_origin(hint) is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_conform(v, typing.get_args(hint)[0]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    return True, value


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        inner = _describe(typing.get_args(hint)[0])
        return "a list of " + {"an integer": "integers", "a string": "strings", "a number": "numbers"}.get(inner, inner)
    return _KINDS.get(hint, getattr(hint, "__name__", str(hint)))


def type_problems(cfg, prefix: str = "") -> list[str]:
    """A problem for each field of the dataclass ``cfg`` whose value is not of its annotated type; values that
    only need converting (a NumPy number, a path for a string) are converted in place."""
    hints = typing.get_type_hints(type(cfg))
    problems = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        ok, out = _conform(value, hints[f.name])
        if ok:
            object.__setattr__(cfg, f.name, out)
            continue
        note = " (TOML writes them in lower case)" if hints[f.name] is bool and isinstance(value, str) else ""
        problems.append(f"{prefix}{f.name}: expected {_describe(hints[f.name])}, got {value!r}{note}")
    return problems
