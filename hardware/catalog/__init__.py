"""The hardware catalog: one YAML file per accelerator (``accelerators/``) and per node type
(``nodes/``).  A new GPU is a new data file here, never a subclass.

Names are matched case-insensitively and through each entry's aliases; an unknown name raises
an :class:`InputError` that suggests the nearest known names.  ``$PLANNER_CATALOG`` may point at
an extra folder with the same layout whose entries add to or replace the built-in ones.

Replacing is explicit: a user entry replaces the built-in entry of the same ``name`` (compared
case-insensitively), aliases included.  A user name or alias that another entry already answers
to (``aliases: [h100]`` on a new GPU) is refused, as are two files of one folder with the same
name and a node whose ``accelerator`` the catalog does not know: otherwise ``--gpu h100`` would
quietly mean a different GPU depending on the environment.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from hardware.accelerator import Accelerator
from hardware.errors import InputError, from_validation_error, unknown_name
from hardware.topology import NodeType

CATALOG_DIR = Path(__file__).resolve().parent
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster


def _folders() -> list[Path]:
    folders = [CATALOG_DIR]
    extra = os.environ.get("PLANNER_CATALOG")
    if extra:
        folders.append(Path(extra))
    return folders


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise InputError(f"malformed catalog file: {str(exc).splitlines()[0]}", file=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("catalog file is not a mapping", file=str(path))
    return data


def _validation_error(path: Path, exc: ValidationError) -> InputError:
    return from_validation_error(exc, file=str(path))


def _strip_notes(data: dict) -> dict:
    for key in ("matmul_efficiency", "memory_efficiency", "elementwise_memory_efficiency"):
        if isinstance(data.get(key), dict):
            data[key] = {k: v for k, v in data[key].items() if k != "note"}
    return data


def load_accelerator_file(path: str | Path) -> Accelerator:
    """Read one accelerator YAML file."""
    path = Path(path)
    try:
        return Accelerator.model_validate(_strip_notes(_load_yaml(path)))
    except ValidationError as exc:
        raise _validation_error(path, exc) from None


def load_node_file(path: str | Path) -> NodeType:
    """Read one node-type YAML file."""
    path = Path(path)
    try:
        return NodeType.model_validate(_load_yaml(path))
    except ValidationError as exc:
        raise _validation_error(path, exc) from None


def _load_folders(sub: str, loader, what: str) -> tuple[dict, dict[str, Path]]:
    """Entries of every catalog folder's ``sub``/ by name, and the file each came from.

    A user folder's entry replaces the built-in one of the same name (case-insensitively); two
    files of one folder with one name, and a name or alias that two entries answer to, are
    refused (see the module docstring)."""
    out: dict = {}
    origin: dict[str, Path] = {}
    builtin: set[str] = set()
    for at, folder in enumerate(_folders()):
        seen: dict[str, Path] = {}
        for path in sorted((folder / sub).glob("*.yaml")):
            entry = loader(path)
            key = entry.name.lower()
            if key in seen:
                raise InputError(f"{what} '{entry.name}' is also defined in {seen[key]}", file=str(path),
                                 field="name", expected=f"one file per {what} in a catalog folder")
            seen[key] = path
            for old in [n for n in out if n.lower() == key]:  # a user entry replaces a built-in one
                del out[old]
                del origin[old]
                builtin.discard(old)
            out[entry.name] = entry
            origin[entry.name] = path
            if at == 0:
                builtin.add(entry.name)
    owner: dict[str, str] = {}
    for name in sorted(out, key=lambda n: (n not in builtin, n)):  # built-ins first: a user file is named
        for key in dict.fromkeys(k.lower() for k in (name, *out[name].aliases)):
            other = owner.get(key)
            if other is not None and other != name:
                field = "name" if key == name.lower() else "aliases"
                kind = f"built-in {what}" if other in builtin else what
                raise InputError(f"'{key}' already names the {kind} {other} ({origin[other]})",
                                 file=str(origin[name]), field=field,
                                 expected=f"a name and aliases no other {what} answers to",
                                 hint=f"To replace {other}, name the entry '{other}' (an entry replaces "
                                      "the built-in one of the same name); otherwise change or drop the "
                                      f"{'name' if field == 'name' else 'alias'} '{key}'")
            owner[key] = name
    return out, origin


@functools.lru_cache(maxsize=None)
def _accelerators() -> dict[str, Accelerator]:
    return _load_folders("accelerators", load_accelerator_file, "GPU")[0]


@functools.lru_cache(maxsize=None)
def _nodes() -> dict[str, NodeType]:
    nodes, origin = _load_folders("nodes", load_node_file, "node type")
    out: dict[str, NodeType] = {}
    for name, node in nodes.items():  # every node on a GPU the catalog knows, spelled as it is
        acc = get_accelerator(node.accelerator, field="accelerator", file=str(origin[name]))
        out[name] = node if acc.name == node.accelerator else node.model_copy(update={"accelerator": acc.name})
    return out


def _index(entries: dict) -> dict[str, str]:
    index: dict[str, str] = {}
    for name, entry in entries.items():
        for key in (name, *entry.aliases):
            index[key.lower()] = name
    return index


def list_accelerators() -> list[Accelerator]:
    """All accelerators, in catalog order (by name)."""
    return [a for _, a in sorted(_accelerators().items())]


def accelerator_names() -> list[str]:
    return sorted(_accelerators())


def get_accelerator(name: str, *, field: str | None = "gpu", file: str | None = None) -> Accelerator:
    """The accelerator called ``name`` (case-insensitive, aliases accepted, e.g. ``H100``)."""
    if isinstance(name, Accelerator):
        return name
    accs = _accelerators()
    key = _index(accs).get(str(name).strip().lower())
    if key is None:
        raise unknown_name("GPU", str(name), accs, field=field, file=file,
                           spellings=_index(accs))
    return accs[key]


def list_nodes() -> list[NodeType]:
    return [n for _, n in sorted(_nodes().items())]


def get_node(name: str, *, field: str | None = "node", file: str | None = None) -> NodeType:
    """The node type called ``name`` (case-insensitive, aliases accepted)."""
    if isinstance(name, NodeType):
        return name
    nodes = _nodes()
    key = _index(nodes).get(str(name).strip().lower())
    if key is None:
        raise unknown_name("node type", str(name), nodes, field=field, file=file,
                           spellings=_index(nodes))
    return nodes[key]


def largest_node_gpus(accelerator: str | Accelerator) -> int | None:
    """GPUs in the largest catalog node of this accelerator (:func:`default_node_for`); None
    when the catalog has no node (or no entry) for it."""
    try:
        return default_node_for(accelerator).gpus_per_node
    except InputError:
        return None


def default_node_for(accelerator: str | Accelerator) -> NodeType:
    """The largest catalog node type built from this accelerator (8-GPU boxes before 1-GPU VMs)."""
    acc = get_accelerator(accelerator)
    candidates = [n for n in list_nodes() if n.accelerator == acc.name]
    if not candidates:
        raise InputError(f"no node type in the catalog uses {acc.name}", field="gpu")
    return max(candidates, key=lambda n: (n.gpus_per_node, n.name))


def clear_cache() -> None:
    """Forget loaded entries (tests that set $PLANNER_CATALOG call this)."""
    _accelerators.cache_clear()
    _nodes.cache_clear()
