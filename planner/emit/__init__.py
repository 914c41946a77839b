"""Deployable artifacts: engine launch commands, manifests, expert maps.

Emitters render their files in memory (relative path -> text) and :func:`write_artifacts`
puts them into the output folder: each file atomically, with ``planner-emit-files.sha256``
listing what was written (``sha256sum -c`` format), so that a later ``--replace`` removes
exactly the files an earlier emit wrote and nothing of the user's.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

#: the list of files an emit wrote, with their sha256 (``sha256sum -c planner-emit-files.sha256``)
LISTING = "planner-emit-files.sha256"


class Artifact(NamedTuple):
    """One emitted file: its text and whether it is a script (mode 0755)."""

    text: str
    executable: bool = False


def hf_model_id(model: str) -> str:
    """The Hugging Face id an engine should serve for ``model``: a fixture alias maps to its
    config's ``_name_or_path``; an id or a local path passes through unchanged."""
    from costmodels.model import aliases, load_model
    if model.lower() in aliases():
        return load_model(model).hf_id or model
    return model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_listing(out_dir: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from an earlier emit's listing; entries that would reach
    outside ``out_dir`` (``..``, absolute paths, a linked folder) are ignored, so a
    hand-edited listing can never make ``--replace`` delete elsewhere."""
    listing = out_dir / LISTING
    if not listing.is_file():
        return {}
    root = out_dir.resolve()
    out = {}
    for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or Path(rel).is_absolute():
            continue
        target = (out_dir / rel).resolve()
        if target != root and root in target.parents:
            out[rel] = digest
    return out


def check_output_folder(out_dir: str | os.PathLike) -> Path:
    """Refuse an output folder that cannot be one before anything is rendered or written: an
    existing file, a path through a file (``afile/sub``), or a new folder whose nearest existing
    parent is not writable.  Returns the path.  (Whether a folder is empty, or was written by an
    earlier emit, is :func:`write_artifacts`'s check.)"""
    from hardware.errors import InputError

    out_dir = Path(out_dir)
    if out_dir.is_dir():
        return out_dir
    if out_dir.exists() or out_dir.is_symlink():
        raise InputError("output exists and is not a folder", file=str(out_dir),
                         field="-o/--output", expected="a new or empty folder")
    for parent in out_dir.absolute().parents:
        if parent.is_dir():
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"cannot make a folder in {parent} (not writable)",
                                 file=str(out_dir), field="-o/--output",
                                 expected="a folder you can write to")
            break
        if parent.exists() or parent.is_symlink():
            raise InputError(f"{parent} is not a folder", file=str(out_dir), field="-o/--output",
                             expected="a new or empty folder whose parents are folders")
    return out_dir


def write_artifacts(out_dir: str | os.PathLike, files: dict[str, Artifact], *,
                    replace: bool = False) -> list[Path]:
    """Write ``files`` (relative path -> :class:`Artifact`) under ``out_dir`` and return their
    paths.  ``out_dir`` is created when missing.

    An existing non-empty ``out_dir`` is refused unless ``replace``: left-over manifests of
    retired pools would come back with ``kubectl apply -f DIR``.  With ``replace``, the files
    the earlier emit listed are removed or overwritten, provided they still hold what it
    wrote; any other file that would be overwritten, or a listed file changed since, stops the
    emit before anything is touched.  Other files in the folder are kept.
    """
    from hardware.errors import InputError
    from planner.plan import write_atomic

    out_dir = check_output_folder(out_dir)
    present = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if present and not replace:
        shown = ", ".join(present[:4]) + (f" and {len(present) - 4} more" if len(present) > 4 else "")
        raise InputError(f"output folder is not empty ({shown})", file=str(out_dir),
                         field="-o/--output", expected="a new or empty folder",
                         hint="Pass --replace to remove the files an earlier planner emit wrote "
                              f"there (listed in {LISTING}) and keep the rest")
    previous = _read_listing(out_dir) if present else {}
    changed, foreign = [], []
    for rel in sorted(set(files) | set(previous)):
        path = out_dir / rel
        if not (path.exists() or path.is_symlink()):
            continue
        if rel not in previous:
            foreign.append(rel)  # the user's file where this emit writes one of its own
        elif not path.is_file() or path.is_symlink() or _sha256(path) != previous[rel]:
            changed.append(rel)
    if foreign:
        raise InputError(f"would overwrite {', '.join(foreign)}, which no earlier planner emit "
                         f"wrote", file=str(out_dir), field="-o/--output",
                         expected="a folder without files of these names", hint="Move them away")
    if changed:
        raise InputError(f"{', '.join(changed)} changed since planner emit wrote "
                         f"{'it' if len(changed) == 1 else 'them'}",
                         file=str(out_dir), field="-o/--output",
                         expected=f"the files as {LISTING} records them",
                         hint="Move them away (or delete them) and run again")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # made unwritable, or a file put in its way, since the check
        raise InputError(f"cannot make the folder: {exc.strerror or exc}", file=str(out_dir),
                         field="-o/--output", expected="a new or empty folder") from None
    texts = {rel: art.text.encode("utf-8") for rel, art in files.items()}
    digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in texts.items()}

    def listing(entries: dict[str, str]) -> str:
        return "".join(f"{d}  {rel}\n" for rel, d in sorted(entries.items()))

    # the listing first names old and new files alike: an emit cut short leaves nothing that a
    # later --replace would take for the user's
    write_atomic(out_dir / LISTING, listing({**previous, **digests}))
    written = []
    for rel, art in sorted(files.items()):
        path = out_dir / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # e.g. a file named keda where the keda/ folder goes
            raise InputError(f"cannot make folder {path.parent}: {exc.strerror}", file=str(out_dir),
                             field="-o/--output") from None
        write_atomic(path, texts[rel])
        if art.executable:
            path.chmod(0o755)
        written.append(path)
    for rel in sorted(set(previous) - set(files)):  # retired pools' manifests and scripts
        stale = out_dir / rel
        stale.unlink(missing_ok=True)
        for folder in stale.parents:  # folders of ours left empty (keda/)
            if folder == out_dir or out_dir not in folder.parents or any(folder.iterdir()):
                break
            folder.rmdir()
    write_atomic(out_dir / LISTING, listing(digests))
    return written
