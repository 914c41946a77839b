"""The one error type for bad input, shared by every layer.

Lives in ``hardware`` because that package sits at the bottom of the import graph
(``planner -> costmodels -> hardware``), so every layer can raise it.  The CLI turns it
into one line on stderr and exit status 2; library users catch it as a ``ValueError``.
"""
from __future__ import annotations

import difflib
import math
import re
from typing import Any, Iterable, Mapping


class InputError(ValueError):
    """Bad input: names the file, the field and what was expected.

    Args:
        message: what is wrong, in one sentence.
        file: the file the value came from, if any.
        field: the field (dotted path) inside that file or request, if any; list indices are
            written ``models[0].slo`` (a pydantic-style ``models.0.slo`` is rewritten so).
        expected: what would have been accepted.
        hint: an extra suggestion (nearest names, how many GPUs are needed...).
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 expected: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.field = None if field is None else field_path(field)
        self.expected = expected
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.field:
            where.append(f"field '{self.field}'")
        text = (": ".join([", ".join(where), self.message]) if where else self.message)
        if self.expected:
            text += f" (expected {self.expected})"
        if self.hint:
            text += f". {self.hint}"
        return text


def field_path(field: str) -> str:
    """``models.0.slo.tpot_s`` -> ``models[0].slo.tpot_s``: one spelling of list indices in
    every message (hand-written messages use brackets, pydantic's locations use dots)."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", str(field))


#: pydantic adds these to an error's location (validator wrappers, union members); they are
#: not fields the user wrote
_LOC_NOISE = re.compile(r"^(function-\w+|[\w-]+\[.*\]|int|float|str|bool|none|list|dict)$")


def _shown(value: Any) -> str | None:
    """A short rendering of a value the user gave, or None for mappings and long values
    (the field path already says where to look)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # nan, inf, -inf
    if isinstance(value, (int, str)):
        text = repr(value)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
        text = repr(list(value))
    else:
        return None
    return text if len(text) <= 60 else text[:57] + "..."


def from_validation_error(exc: Any, *, file: str | None = None, prefix: str = "",
                          expected: str | None = None) -> InputError:
    """The :class:`InputError` for a pydantic ``ValidationError`` (its first error): the field as
    ``models[0].slo.tpot_s`` (under ``prefix`` when the validated object sits inside a larger
    request), pydantic's reason, and the value given (``got -0.05``).

    Every planner validates its request with pydantic; converting here keeps their messages
    alike.  ``expected`` is the command's own description of what would be accepted."""
    err = exc.errors()[0]
    loc = [str(p) for i, p in enumerate(err["loc"])
           if not (isinstance(p, str) and i > 0 and _LOC_NOISE.match(p))
           and not str(p).startswith("function-")]
    field = ".".join(([prefix] if prefix else []) + loc) or None
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    else:
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        shown = _shown(err.get("input"))
        if shown is not None:
            message += f" (got {shown})"
    return InputError(message, file=file, field=field, expected=expected)


class InfeasibleError(InputError):
    """A well-formed problem with no solution; ``binding`` names the constraint that binds."""

    def __init__(self, message: str, *, binding: str, **kwargs) -> None:
        self.binding = binding
        super().__init__(message, **kwargs)


def nearest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The up to ``n`` choices closest to ``name`` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    if not hits:  # fall back to substring matches ("h100" -> "h100-sxm")
        hits = [c for c in lowered if name.lower() in c or c in name.lower()][:n]
    return [lowered[h] for h in hits]


def unknown_name(kind: str, name: str, choices: Iterable[str], *, file: str | None = None,
                 field: str | None = None, spellings: Mapping[str, str] | None = None
                 ) -> InputError:
    """An ``InputError`` for an unknown name, suggesting the nearest known ones.

    ``spellings`` maps every accepted spelling (aliases included, any case) to its ``choices``
    name: the nearest spellings are then suggested as those names, each once."""
    choices = sorted(choices)
    if spellings:
        canon = {k.lower(): v for k, v in spellings.items()}
        near = list(dict.fromkeys(canon[h.lower()] for h in nearest(name, canon, n=3 * 3)))[:3]
    else:
        near = nearest(name, choices)
    hint = f"Did you mean {', '.join(near)}?" if near else f"Known: {', '.join(choices)}"
    return InputError(f"unknown {kind} '{name}'", file=file, field=field,
                      expected=f"one of the catalog's {kind} names", hint=hint)
