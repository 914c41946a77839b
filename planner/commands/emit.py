"""``planner emit``: deployable artifacts from a plan (vLLM commands, Kubernetes manifests)."""
from __future__ import annotations

import re
from pathlib import Path

import typer

from hardware.errors import InputError
from planner.emit import LISTING

FORMATS = ("vllm", "kubernetes")
#: a Kubernetes object name (DNS subdomain: RFC 1123, at most 253 characters)
_DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
#: a namespace name (DNS label: RFC 1123, at most 63 characters)
_DNS_LABEL = re.compile(r"(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def emit(
    plan_path: Path = typer.Argument(..., help="A plan file (FleetPlan) written by the planner."),
    fmt: str = typer.Option(None, "--format", help="vllm | kubernetes"),
    out_dir: Path = typer.Option(None, "-o", "--output",
                                 help="Folder for the artifacts: new or empty (created)."),
    replace: bool = typer.Option(False, "--replace",
                                 help="Emit into a folder an earlier planner emit wrote: its files "
                                      f"(listed in {LISTING}) are replaced or removed, other "
                                      "files kept."),
    image: list[str] = typer.Option(None, "--image",
                                    help="Serving image (kubernetes): IMAGE for every pool, or "
                                         "VENDOR=IMAGE for one vendor's pools (nvidia, amd, "
                                         "intel); repeatable.  Defaults: "
                                         "vllm/vllm-openai:latest (nvidia), rocm/vllm:latest "
                                         "(amd)."),
    router_image: str = typer.Option(None, "--router-image",
                                     help="Image of the prefill/decode router of each "
                                          "disaggregated bundle (kubernetes; default "
                                          "vllm/vllm-router:nightly)."),
    namespace: str = typer.Option(None, "--namespace", help="Namespace (kubernetes)."),
    cache_pvc: str = typer.Option(None, "--cache-pvc",
                                  help="PersistentVolumeClaim mounted as every serving pod's "
                                       "Hugging Face cache (kubernetes): new replicas load the "
                                       "weights from it instead of downloading them."),
    day_start: str = typer.Option("00:00", "--day-start",
                                  help="Time of day period 0 starts, HH:MM (kubernetes: KEDA "
                                       "cron triggers for a plan whose periods tile a day or "
                                       "a week)."),
    weekday: str = typer.Option("mon", "--weekday",
                                help="Day of the week period 0 starts, mon..sun (KEDA cron "
                                     "triggers for a plan whose periods tile a week)."),
    timezone: str = typer.Option("Etc/UTC", "--timezone", help="IANA time zone of --day-start."),
    lead_s: float = typer.Option(None, "--lead-s",
                                 help="Seconds a KEDA scale-up starts before its period "
                                      "(default 600: weights take minutes to load)."),
) -> None:
    """Write one vLLM serve command per pool, or one Kubernetes Deployment per pool (plus
    schedule.sh and KEDA ScaledObjects for a plan over several periods, transition.sh for a
    re-plan, a prefill/decode router per disaggregated bundle).  Each engine gets
    --max-model-len: the longest request the plan routes to its pool."""
    from planner.commands.common import require_finite
    from planner.emit import check_output_folder, write_artifacts
    from planner.emit.kubernetes import (DEFAULT_LEAD_S, DEFAULT_ROUTER_IMAGE, WEEKDAYS,
                                         check_timezone, fleet_kubernetes_files)
    from planner.emit.plan_check import check_fleet_plan
    from planner.emit.vllm import fleet_vllm_files
    from planner.plan import load_plan

    if fmt is None or fmt not in FORMATS:
        raise InputError("no format given" if fmt is None else f"unknown format {fmt!r}",
                         field="--format", expected=" or ".join(FORMATS))
    if out_dir is None:
        raise InputError("no output folder given", field="-o/--output",
                         expected="planner emit PLAN --format FORMAT -o FOLDER")
    require_finite(lead_s=lead_s)
    images = _images(image or [])
    if namespace is not None and not _DNS_LABEL.fullmatch(namespace):
        raise InputError(f"--namespace {namespace!r}", field="--namespace",
                         expected="a namespace name (DNS-1123 label): lower-case letters, digits "
                                  "and '-', starting and ending alphanumeric, at most 63")
    if cache_pvc is not None and not _DNS_NAME.fullmatch(cache_pvc):
        raise InputError(f"--cache-pvc {cache_pvc!r}", field="--cache-pvc",
                         expected="a PersistentVolumeClaim name: lower-case letters, digits, '-' "
                                  "and '.', starting and ending alphanumeric, at most 253")
    day_start_s = _time_of_day(day_start)
    weekday = _weekday(weekday, WEEKDAYS)
    check_timezone(timezone)
    check_output_folder(out_dir)
    # one check of everything the emitters read: each bad field is one error naming the file
    plan = check_fleet_plan(load_plan(plan_path, kinds=["FleetPlan"]), file=str(plan_path))
    lead = DEFAULT_LEAD_S if lead_s is None else float(lead_s)
    period_s = plan.get("period_s")
    if fmt == "kubernetes" or lead_s is not None:  # KEDA's lead: kubernetes only
        given = "--lead-s" if lead_s is not None else "the default lead (--lead-s)"
        if lead < 0:
            raise InputError(f"lead {lead:g} s", field="--lead-s", expected="at least 0")
        if period_s is not None and lead >= period_s:
            raise InputError(f"{given} {lead:g} s is not shorter than the plan's periods "
                             f"({period_s:g} s, period_s in {plan_path})", field="--lead-s",
                             expected=f"at least 0 and less than {period_s:g}")
    try:
        if fmt == "vllm":
            files = fleet_vllm_files(plan)
        else:
            files = fleet_kubernetes_files(plan, images=images, cache_pvc=cache_pvc,
                                           namespace=namespace, day_start_s=day_start_s,
                                           weekday=weekday, timezone=timezone, lead_s=lead,
                                           router_image=router_image or DEFAULT_ROUTER_IMAGE)
    except InputError as exc:  # a clash between the plan's names found while rendering
        if exc.file is None and (exc.field or "").startswith("pools"):
            raise InputError(exc.message, file=str(plan_path), field=exc.field,
                             expected=exc.expected, hint=exc.hint) from None
        raise
    # everything is rendered before the folder is touched: a bad plan leaves it as it was
    written = write_artifacts(out_dir, files, replace=replace)
    for p in written:
        typer.echo(f"wrote {p}")
    if fmt == "kubernetes":  # GPUs deployed by the fallback rule: one note per GPU type
        from planner.emit.kubernetes import gpu_fallback
        notes = {p["gpu"]: gpu_fallback(p) for p in plan["pools"]}
        for gpu in sorted(g for g, why in notes.items() if why):
            typer.echo(f"note: {notes[gpu]}", err=True)
    keda = any(p.parent.name == "keda" for p in written)
    if keda:
        from planner.emit.kubernetes import lead_cost_per_hour
        extra = lead_cost_per_hour(plan, lead)
        cost = plan.get("cost_per_hour")
        share = f" ({100 * extra / cost:.1f}% of the plan's {cost:.2f})" if cost else ""
        typer.echo(f"note: KEDA starts scale-ups {lead:g} s early: about {extra:.2f} $/h more"
                   f"{share}", err=True)
    if any(p.name == "schedule.sh" for p in written) and not keda:
        periods = max(len(pool.get("counts_by_period") or []) for pool in plan["pools"])
        typer.echo(f"note: no KEDA ScaledObjects: the plan's {periods} periods of "
                   f"{plan.get('period_s')} s do not tile one day or one week on whole minutes; "
                   "schedule.sh scales between them", err=True)


def _time_of_day(text: str) -> float:
    """Seconds after midnight of "HH:MM"."""
    parts = text.strip().split(":")
    if (len(parts) != 2 or not all(p.isdigit() for p in parts)
            or int(parts[0]) > 23 or int(parts[1]) > 59):
        raise InputError(f"time of day {text!r}", field="--day-start", expected="HH:MM, 00:00-23:59")
    return 3600.0 * int(parts[0]) + 60.0 * int(parts[1])


def _weekday(text: str, weekdays: tuple[str, ...]) -> str:
    """The three-letter day of ``weekdays`` that ``text`` names ("Wed" or "wednesday")."""
    full = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    key = text.strip().lower()
    if key in weekdays:
        return key
    if key in full:
        return weekdays[full.index(key)]
    raise InputError(f"day of the week {text!r}", field="--weekday",
                     expected=", ".join(weekdays) + " or the day's full name")


def register(app: typer.Typer) -> None:
    app.command("emit")(emit)


def _images(values: list[str]) -> dict[str, str]:
    """``--image`` values as serving images by vendor (``"*"``: every pool)."""
    from planner.emit.kubernetes import VENDOR_OF_RESOURCE

    vendors = sorted(set(VENDOR_OF_RESOURCE.values()))
    out: dict[str, str] = {}
    for value in values:
        vendor, sep, ref = value.partition("=")  # image references never hold '='
        vendor, ref = (vendor.strip().lower(), ref.strip()) if sep else ("*", value.strip())
        if (sep and vendor not in vendors) or not ref:
            raise InputError(f"--image {value!r}", field="--image",
                             expected=f"IMAGE, or VENDOR=IMAGE with VENDOR one of "
                                      f"{', '.join(vendors)}")
        if vendor in out:
            raise InputError(f"two images for {'every pool' if vendor == '*' else vendor}: "
                             f"{out[vendor]!r} and {ref!r}", field="--image",
                             expected="one image per vendor")
        out[vendor] = ref
    return out
