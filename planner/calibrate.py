"""Library entry for ``planner calibrate``: read measured tables, fit, write a calibration file.

The fitting lives in :mod:`costmodels.calibration`; this module resolves which accelerator each
table belongs to, wraps the result in the versioned envelope (``apiVersion: planner/v1``,
``kind: Calibration``) and writes it atomically.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

from costmodels.calibration import MIN_SAMPLES, Calibration, calibrate
from hardware.catalog import get_accelerator
from hardware.errors import InputError
from hardware.profiles import CommSample, OpSample, find_vidur_op_csvs, read_comm_tables, read_vidur_op_csv
from planner.plan import dump_plan, envelope


def guess_accelerator(path: str | Path) -> str | None:
    """The catalog accelerator a measured table's path names (``.../h100_dgx/...``,
    ``.../H100-SXM-80GB/...``), or None."""
    for part in reversed(Path(path).parts):
        low = part.lower()
        for cand in (low, *low.replace("-", "_").split("_")):
            if not cand:
                continue
            try:
                return get_accelerator(cand).name
            except InputError:
                continue
    return None


def split_assignment(value: str) -> tuple[str | None, str]:
    """``GPU=PATH`` -> (catalog name, PATH); a plain PATH -> (None, PATH)."""
    if "=" in value and not Path(value).exists():
        gpu, _, path = value.partition("=")
        return get_accelerator(gpu.strip(), field="--nccl GPU=PATH").name, path
    return None, value


def collect_op_samples(paths: Iterable[str | Path], gpu: str | None = None) -> dict[str, list[OpSample]]:
    """Vidur per-op samples grouped by catalog accelerator name (only ``gpu`` when given)."""
    want = get_accelerator(gpu).name if gpu else None
    out: dict[str, list[OpSample]] = {}
    for p in paths:
        for f in find_vidur_op_csvs(p):
            acc = guess_accelerator(f)
            if acc is None and want is None:
                raise InputError("cannot tell which GPU this profile was measured on", file=str(f), field="--gpu",
                                 expected="a path like .../compute/h100/<org>/<model>/mlp.csv, or pass --gpu")
            acc = acc or want
            if want is not None and acc != want:
                continue
            out.setdefault(acc, []).extend(read_vidur_op_csv(f, accelerator=acc))
    return out


_GPU_LIKE = re.compile(r"^(?:[a-z]{1,2}\d{2,3}[a-z]?)$")  # v100, a40, t4, mi250, l40s...


def names_other_gpu(path: str | Path) -> bool:
    """True when a folder or file name looks like a GPU model the catalog does not know
    (``V100-PCIE-16GB``, ``a40_pairwise_nvlink``): such tables must not be read as ``--gpu``'s."""
    for part in Path(path).parts:
        for tok in re.split(r"[-_. ]", part.lower()):
            if _GPU_LIKE.match(tok):
                try:
                    get_accelerator(tok)
                except InputError:
                    return True
    return False


def _comm_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in (".csv", ".txt", ".log"))
        if not files:
            raise InputError("no collective tables in this folder", file=str(path),
                             expected="*.csv or nccl-tests *.txt / *.log files")
        return files
    if not path.exists():
        raise InputError("collective table not found", file=str(path))
    return [path]


def collect_comm_samples(values: Iterable[str], gpu: str | None = None) -> dict[str, list[CommSample]]:
    """Collective samples grouped by accelerator.

    Each file's GPU is ``GPU=`` when given, else the GPU its path names (``h100_dgx``,
    ``H100-SXM-80GB``), else ``--gpu``.  With ``--gpu``, files whose path names another GPU
    are skipped, and so are folder entries that name a GPU outside the catalog (so a folder
    holding several GPUs' tables can be passed whole).
    """
    want = get_accelerator(gpu).name if gpu else None
    out: dict[str, list[CommSample]] = {}
    for v in values:
        explicit, path = split_assignment(v)
        for f in _comm_files(Path(path)):
            acc = explicit or guess_accelerator(f)
            if acc is None:
                if names_other_gpu(f.relative_to(path) if f != Path(path) else f.name):
                    continue  # a folder entry for a GPU outside the catalog (e.g. APEX's V100)
                acc = want
            elif want is not None and acc != want and explicit is None:
                continue
            if acc is None:
                raise InputError("cannot tell which GPU this collective table was measured on", file=str(f),
                                 field="--nccl", expected="GPU=PATH (e.g. H100-SXM=nccl.txt) or --gpu")
            out.setdefault(acc, []).extend(read_comm_tables([f]))
    return out


def run_calibrate(*, vidur: Sequence[str | Path] = (), nccl: Sequence[str] = (),
                  gpu: str | None = None) -> Calibration:
    """Read the tables and fit every accelerator they cover (only ``gpu`` when given)."""
    if not vidur and not nccl:
        raise InputError("nothing to calibrate from", field="--vidur/--nccl",
                         expected="at least one Vidur per-op profile or NCCL table")
    ops = collect_op_samples(vidur, gpu)
    comms = collect_comm_samples(nccl, gpu)
    if not ops and not comms:
        raise InputError(f"no measured data for {gpu}" if gpu else "no measured data found", field="--gpu",
                         expected="tables measured on this GPU")
    calib = calibrate(ops, comms, sources=[str(p) for p in (*vidur, *nccl)])
    for name, dev in sorted(calib.devices.items()):
        if not (dev.op_fits or dev.kind_fits or dev.link_fits):  # a file that calibrates nothing
            raise InputError(f"nothing could be fitted for {name}: {len(ops.get(name, []))} op sample(s) and "
                             f"{len(comms.get(name, []))} collective sample(s)", field="--vidur/--nccl",
                             expected=f"at least {MIN_SAMPLES} samples of one op or one collective on {name}"
                                      + ("; --gpu picks one GPU's tables" if len(calib.devices) > 1 else ""))
    return calib


def calibration_document(calib: Calibration, inputs: Iterable[str] = ()) -> dict:
    """The calibration as a versioned plan document (``kind: Calibration``)."""
    return envelope("Calibration", calib.to_dict(), inputs={"sources": sorted(str(i) for i in inputs)})


def write_calibration(calib: Calibration, output: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
    """Write the calibration file (YAML for .yaml/.yml, else JSON) atomically."""
    protect = [split_assignment(str(i))[1] for i in inputs]
    return dump_plan(calibration_document(calib, [str(i) for i in inputs]), output, protect=protect)


__all__ = ["run_calibrate", "write_calibration", "calibration_document", "guess_accelerator",
           "collect_op_samples", "collect_comm_samples"]
