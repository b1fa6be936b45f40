"""What the pages show, computed from the API's own objects (JobObject, ArtifactObject, ...): no query lives here."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from service.schemas import ArtifactObject, JobObject
from service.tables import LIVE, TERMINAL

# Pictures the pipeline draws, with what they show; any other .png artifact is shown under its file name.
PLOT_CAPTIONS = {
    "curves.png": "Training curves",
    "recurrent_weights.png": "Recurrent weights |W_hh| of each layer (black = zero)",
    "moduli_neurons.png": "Hidden neurons on the moduli space",
    "tradeoff.png": "Quality against size and speed: this job, its reference and baselines",
    "speed.png": "Inference speed on the worker: this model on the runtime against its dense equivalent",
}
# What the colour of a headline's ratio means, shown as its tooltip.
TONE_TITLES = {
    "better": "no worse than the reference",
    "within": "worse than the reference, within the recipe's quality_tolerance",
    "worse": "worse than the reference by more than the recipe's quality_tolerance",
}
# What the headline's reference is, from the job's ``reference_kind``.
REFERENCE_WORDS = {
    "dense_full": "the dense model of full size",
    "dense_same_params": "a dense model of the same parameter count",
    "initial_weights": "your weights before compression",
}
REPORT_MAX_BYTES = 8 * 1024 * 1024  # a report is a few kB per tensor; anything larger is offered as a download only


def headline(job: JobObject) -> dict[str, Any] | None:
    """The job's result against its reference, when the job has one: name, value, reference (and what it is, in
    words: ``reference_words``), ratio, whether the result is worse than the reference (from ``lower_is_better``),
    and its ``tone``: ``better`` (no worse than the reference), ``within`` (worse, but within the recipe's quality
    tolerance: the job's ``within_tolerance``) or ``worse`` (beyond it), which colours the ratio. A job without the
    headline keys shows its task metric alone: the one its progress reports name, else its first validation metric
    besides the loss."""
    metrics = job.metrics
    name, value = metrics.get("name"), metrics.get("value")
    if not isinstance(name, str) or not _number(value):
        name = _task_metric(job)
        if name is None:
            return None
        return {
            "name": name,
            "value": metrics[name],
            "reference": None,
            "reference_words": None,
            "ratio": None,
            "worse": None,
            "tone": None,
        }
    reference = metrics.get("reference") if _number(metrics.get("reference")) else None
    ratio = metrics.get("ratio") if _number(metrics.get("ratio")) else None
    if ratio is None and reference:
        ratio = value / reference
    lower = metrics.get("lower_is_better")
    worse = None
    if reference is not None and isinstance(lower, bool):
        worse = value > reference if lower else value < reference
    within = metrics.get("within_tolerance")
    if worse is None:
        tone = None
    elif not worse:
        tone = "better"
    elif isinstance(within, bool):
        tone = "within" if within else "worse"
    else:  # a job written before the verdict carried within_tolerance
        tone = "worse"
    words = REFERENCE_WORDS.get(metrics.get("reference_kind"), "the reference")
    return {
        "name": name,
        "value": value,
        "reference": reference,
        "reference_words": words,
        "ratio": ratio,
        "worse": worse,
        "tone": tone,
    }


def _task_metric(job: JobObject) -> str | None:
    named = job.live.metric if job.live is not None else None
    candidates = [named] if named else [k for k in job.metrics if k.startswith("valid_") and k != "valid_loss"]
    return next((k for k in candidates if _number(job.metrics.get(k))), None)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def other_metrics(job: JobObject) -> list[tuple[str, Any]]:
    """The numeric metrics besides the headline's own keys, in the order the worker wrote them."""
    headline_keys = {"name", "value", "reference", "ratio", "lower_is_better"}
    return [(k, v) for k, v in job.metrics.items() if k not in headline_keys and _number(v)]


def is_live(job: JobObject) -> bool:
    return job.status in LIVE


def is_finished(job: JobObject) -> bool:
    return job.status in TERMINAL


def task_of(job: JobObject) -> str:
    recipe = job.recipe
    method = recipe.get("method", {}).get("type", "?")
    return f"{recipe.get('task', {}).get('type', '?')} · {method}"


def plots(artifacts: list[ArtifactObject]) -> list[dict[str, Any]]:
    """The .png artifacts, the pipeline's known pictures first in their usual order."""
    order = list(PLOT_CAPTIONS)
    pictures = [a for a in artifacts if a.filename.lower().endswith(".png")]
    pictures.sort(key=lambda a: (order.index(a.filename) if a.filename in order else len(order), a.filename))
    return [{"artifact": a, "caption": PLOT_CAPTIONS.get(a.filename, a.filename)} for a in pictures]


def report_artifact(artifacts: list[ArtifactObject]) -> ArtifactObject | None:
    for artifact in artifacts:
        if artifact.filename == "report.json":
            return artifact
    return None


def read_report(store, sha256: str, size: int) -> dict[str, Any] | None:
    """The report's JSON, or None when it is too large to show or not the object a report is."""
    if size > REPORT_MAX_BYTES:
        return None
    try:
        report = json.loads(store.read_bytes(sha256).decode("utf-8"))
    except Exception:  # missing, unreadable, not JSON: the page shows no report
        return None
    return report if isinstance(report, dict) else None


def tensor_rows(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = report.get("tensors") if report else None
    if not isinstance(rows, list):
        return []
    return [row for row in rows if isinstance(row, dict) and "name" in row]


# -- formatting (template filters) ---------------------------------------------------------------------------------


def when(unix: int | None) -> str:
    if unix is None:
        return "—"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def size(count: int | float | None) -> str:
    if count is None:
        return "—"
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def number(value: Any) -> str:
    """Readable at a glance: integers with thousands separators, floats with 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def percent(value: Any) -> str:
    if not _number(value):
        return "—"
    if 0 < value < 0.0005:  # a long job's first steps: under what one decimal shows, but not nothing
        return "<0.1%"
    return f"{100 * value:.1f}%"


def duration(seconds: Any) -> str:
    if not _number(seconds):
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def label(name: str) -> str:
    """A metric's key as a label: words, so that a long one wraps between them."""
    return name.replace("_", " ")


FILTERS = {"label": label, "when": when, "size": size, "number": number, "percent": percent, "duration": duration}
