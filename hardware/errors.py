"""The one error type for bad input, shared by every layer.

Lives in ``hardware`` because that package sits at the bottom of the import graph
(``planner -> costmodels -> hardware``), so every layer can raise it.  The CLI turns it
into one line on stderr and exit status 2; library users catch it as a ``ValueError``.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class InputError(ValueError):
    """Bad input: names the file, the field and what was expected.

    Args:
        message: what is wrong, in one sentence.
        file: the file the value came from, if any.
        field: the field (dotted path) inside that file or request, if any.
        expected: what would have been accepted.
        hint: an extra suggestion (nearest names, how many GPUs are needed...).
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 expected: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.field = field
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
                 field: str | None = None) -> InputError:
    """An ``InputError`` for an unknown name, suggesting the nearest known ones."""
    choices = sorted(choices)
    near = nearest(name, choices)
    hint = f"Did you mean {', '.join(near)}?" if near else f"Known: {', '.join(choices)}"
    return InputError(f"unknown {kind} '{name}'", file=file, field=field,
                      expected=f"one of the catalog's {kind} names", hint=hint)
