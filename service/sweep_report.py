"""A finished sweep's own artifacts: ``summary.json`` (the summary GET /v1/sweeps/{id} returns), ``summary.csv`` (one
row per cell) and ``pareto.png`` (the metric against checkpoint size and against speed-up, the Pareto front drawn and
the best cell marked). Torch-free: the API process makes them when a sweep is cancelled, a worker or the reconciler
when a sweep's last child ends.

Made once per sweep: :func:`produce` records only the files the sweep lacks, under the sweep's row lock (PostgreSQL)
or the database write lock (SQLite), so two producers never duplicate one. A file that fails to render is logged and
left out; nothing here ever changes the sweep itself.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from compress import tasks
from service.db import session_scope
from service.files import lock_blob
from service.schemas import SweepSummary
from service.storage import BlobStore
from service.tables import TERMINAL, Artifact, Sweep

log = logging.getLogger("sparseq.sweeps")

FILES = {"summary.json": "report", "summary.csv": "report", "pareto.png": "plot"}
CSV_MEASURES = (
    ("reference", "reference_mean"),
    ("sparsity", "sparsity_mean"),
    ("checkpoint_bytes", "checkpoint_bytes_mean"),
    ("speedup_latency", "speedup_latency_mean"),
    ("speedup_throughput", "speedup_throughput_mean"),
)


# -- the files ---------------------------------------------------------------------------------------------------


def summary_document(summary: dict) -> dict:
    """The summary as the API renders it (GET /v1/sweeps/{id}'s ``summary``)."""
    return SweepSummary.model_validate(summary).model_dump(mode="json")


def summary_json(summary: dict) -> bytes:
    return (json.dumps(summary_document(summary), indent=2) + "\n").encode()


def override_paths(cells: list[dict]) -> list[str]:
    """Every override path of the cells, in the order they first appear."""
    return list(dict.fromkeys(path for cell in cells for path in cell.get("overrides", {})))


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def summary_csv(summary: dict) -> bytes:
    """One row per cell: its override values (a column per dotted path), the metric's name, mean, sample std and
    n (succeeded seeds), then the means of reference, sparsity, checkpoint bytes and the speed-ups."""
    cells = summary.get("cells") or []
    paths = override_paths(cells)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*paths, "metric", "mean", "std", "n", *(name for name, _ in CSV_MEASURES)])
    for cell in cells:
        overrides = cell.get("overrides", {})
        writer.writerow(
            [
                *(_cell_text(overrides.get(path)) for path in paths),
                _cell_text(cell.get("metric")),
                _cell_text(cell.get("value_mean")),
                _cell_text(cell.get("value_std")),
                cell.get("n", 0),
                *(_cell_text(cell.get(key)) for _, key in CSV_MEASURES),
            ]
        )
    return out.getvalue().encode()


def metric_of(recipe: dict, cells: list[dict]) -> tuple[str, bool, str]:
    """(name, lower_is_better, description) of the sweep's task metric: the task registry's, else what the children
    reported."""
    try:
        metric = tasks.get(recipe["task"]["type"]).metric
        return metric.name, metric.lower_is_better, metric.description
    except (KeyError, TypeError, tasks.UnknownTask):
        measured = next((c for c in cells if c.get("metric")), {})
        return measured.get("metric") or "metric", measured.get("lower_is_better") is not False, ""


LABEL_CHARS = 44  # a picture's label: longer ones are cut (summary.csv has every override in full)


def _label_text(value) -> str:
    """An override's value for a picture: a section as its type and its other settings, e.g.
    ``moduli_pruning(target_sparsity=0.9)``, not its JSON."""
    if isinstance(value, dict):
        settings = ", ".join(f"{k}={_label_text(v)}" for k, v in value.items() if k != "type")
        return f"{value['type']}({settings})" if "type" in value else settings
    return _cell_text(value)


def cell_labels(cells: list[dict]) -> list[str]:
    """Each cell by its overrides, a path shortened to its last part where that names it unambiguously, at most
    LABEL_CHARS characters."""
    paths = override_paths(cells)
    last = [p.rsplit(".", 1)[-1] for p in paths]
    short = {p: (s if last.count(s) == 1 else p) for p, s in zip(paths, last, strict=True)}
    labels = []
    for cell in cells:
        parts = [f"{short[p]}={_label_text(v)}" for p, v in cell.get("overrides", {}).items()]
        label = ", ".join(parts) or "base recipe"
        labels.append(label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…")
    return labels


def _size_unit(largest: float) -> tuple[float, str]:
    """The scale and unit that show checkpoint sizes as numbers people read: bytes, kB or MB."""
    if largest >= 1e6:
        return 1e-6, "MB"
    return (1e-3, "kB") if largest >= 1e3 else (1.0, "bytes")


def pareto_front(points: list[tuple[float, float]], *, x_lower: bool, y_lower: bool) -> list[int]:
    """Indices of the points no other point dominates (as good or better on both axes, better on one), by x."""
    sign_x, sign_y = (1 if x_lower else -1), (1 if y_lower else -1)
    keyed = [(sign_x * x, sign_y * y) for x, y in points]  # both to minimise
    front = []
    for i, (x, y) in enumerate(keyed):
        dominated = any(ox <= x and oy <= y and (ox < x or oy < y) for j, (ox, oy) in enumerate(keyed) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def best_cell(cells: list[dict], lower_is_better: bool) -> int | None:
    scored = [(i, c["value_mean"]) for i, c in enumerate(cells) if _finite(c.get("value_mean"))]
    if not scored:
        return None
    pick = min if lower_is_better else max
    return pick(scored, key=lambda item: item[1])[0]


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def pareto_png(sweep_id: str, recipe: dict, summary: dict) -> bytes:
    # A Figure of its own, not pyplot: no global state, so the reconciler thread and a task may both draw at once
    from matplotlib.figure import Figure

    cells = summary.get("cells") or []
    name, lower, description = metric_of(recipe, cells)
    labels = cell_labels(cells)
    best = best_cell(cells, lower)
    measured = [i for i, c in enumerate(cells) if _finite(c.get("value_mean"))]
    from matplotlib.ticker import MaxNLocator

    speed_label = "speed-up over the dense model (x, batch-1 latency)"
    sizes = [c["checkpoint_bytes_mean"] for c in cells if _finite(c.get("checkpoint_bytes_mean"))]
    size_scale, size_unit = _size_unit(max(sizes, default=0.0))
    panels = (
        ("checkpoint_bytes_mean", size_scale, f"checkpoint size ({size_unit})", True, "quality against size"),
        ("speedup_latency_mean", 1.0, speed_label, False, "quality against speed"),
    )
    figure = Figure(figsize=(14, 6.5))
    axes = figure.subplots(1, 2)
    for axis, (key, scale, x_label, x_lower, panel_title) in zip(axes, panels, strict=True):
        shown = [i for i in measured if _finite(cells[i].get(key))]
        axis.set(xlabel=x_label, ylabel=f"{name} (mean ± std over seeds)", title=panel_title)
        axis.grid(alpha=0.3, which="both")
        if not shown:
            what = "speed-up" if key.startswith("speedup") else "checkpoint size"
            hint = " (recipe: output.measure_speed)" if key.startswith("speedup") else ""
            note = f"no cell measured its {what}{hint}" if measured else "no cell has a succeeded seed"
            axis.text(0.5, 0.5, note, ha="center", va="center", transform=axis.transAxes)
            axis.set_xticks([])
            axis.set_yticks([])
            continue
        xs = [cells[i][key] * scale for i in shown]
        ys = [cells[i]["value_mean"] for i in shown]
        errors = [cells[i].get("value_std") or 0.0 for i in shown]
        axis.errorbar(xs, ys, yerr=errors, fmt="o", color="C0", ecolor="gray", capsize=3, zorder=3, label="cell")
        for n, (x, y, i) in enumerate(zip(xs, ys, shown, strict=True)):  # neighbours' labels above and below
            offset = (6, 6) if n % 2 == 0 else (6, -11)
            axis.annotate(labels[i], (x, y), xytext=offset, textcoords="offset points", fontsize=7)
        front = pareto_front(list(zip(xs, ys, strict=True)), x_lower=x_lower, y_lower=lower)
        axis.plot(
            [xs[k] for k in front],
            [ys[k] for k in front],
            drawstyle="steps-post" if x_lower else "steps-pre",  # the edge of the region the front dominates
            marker="o",
            markersize=12,
            markerfacecolor="none",
            color="C1",
            zorder=2,
            label=f"Pareto front ({len(front)} of {len(shown)} cells)",
        )
        if best in shown:
            k = shown.index(best)
            cell = cells[best]
            std = f" ± {cell['value_std']:.4g}" if _finite(cell.get("value_std")) else ""
            best_label = f"best {name}: {labels[best]} ({cell['value_mean']:.4g}{std})"
            axis.scatter([xs[k]], [ys[k]], marker="*", s=320, color="C3", zorder=4, label=best_label)
        axis.margins(0.12)
        if x_lower and min(xs) > 0 and max(xs) / min(xs) > 20:
            axis.set_xscale("log")
            axis.set_xlabel(f"{x_label}, log scale")
        else:  # a few plain ticks: close values would otherwise print as one unreadable run of digits
            axis.xaxis.set_major_locator(MaxNLocator(nbins=5))
            axis.ticklabel_format(axis="x", style="plain", useOffset=False)
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=1, frameon=False)
    direction = "lower" if lower else "higher"
    missing = len(cells) - len(measured)
    title = f"sweep {sweep_id}: {name}, {direction} is better" + (f" ({description})" if description else "")
    if missing:
        title += f"\n{missing} of {len(cells)} cells have no succeeded seed and are not shown"
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)  # the Agg renderer: no display needed
    return out.getvalue()


RENDERERS: dict[str, Callable[[Sweep, dict], bytes]] = {
    "summary.json": lambda sweep, summary: summary_json(summary),
    "summary.csv": lambda sweep, summary: summary_csv(summary),
    "pareto.png": lambda sweep, summary: pareto_png(sweep.id, sweep.recipe, summary),
}


# -- recording them ----------------------------------------------------------------------------------------------


def _existing(session: Session, sweep_id: str) -> set[str]:
    return set(session.scalars(select(Artifact.filename).where(Artifact.sweep_id == sweep_id)))


def produce(session: Session, store: BlobStore, sweep_id: str) -> list[Artifact]:
    """Render and record the files a finished sweep lacks; returns the artifacts added (none for a running sweep, or
    when it has them all). The caller commits. A renderer's failure is logged and its file left out."""
    from service.sweeps import children, summarize

    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.status not in TERMINAL:
        return []
    missing = [name for name in FILES if name not in _existing(session, sweep_id)]
    if not missing:
        return []
    summary = sweep.summary if sweep.summary is not None else summarize(sweep, children(session, sweep_id))
    rendered = {}
    for name in missing:
        try:
            rendered[name] = RENDERERS[name](sweep, summary)
        except Exception:
            log.exception("sweep %s: %s was not rendered", sweep_id, name)
    staged = {name: store.stage_chunks([data]) for name, data in rendered.items()}
    added = []
    try:
        session.scalar(select(Sweep.id).where(Sweep.id == sweep_id).with_for_update())  # one producer at a time
        for sha in sorted({sha for _, sha, _ in staged.values()}):
            lock_blob(session, sha)  # SQLite: the write lock, taken before the check below
        present = _existing(session, sweep_id)
        for name, (temporary, sha, size) in staged.items():
            if name in present:  # another producer got there first
                continue
            store.commit(temporary, sha)
            kind = FILES[name]
            artifact = Artifact(sweep_id=sweep_id, owner=sweep.owner, kind=kind, filename=name, bytes=size, sha256=sha)
            session.add(artifact)
            added.append(artifact)
        session.flush()
    finally:
        for temporary, _, _ in staged.values():
            temporary.unlink(missing_ok=True)
    return added


def publish(session: Session, store: BlobStore, sweep_id: str) -> list[Artifact]:
    """:func:`produce` and commit, in a session whose own work is committed already; a failure is logged and rolls
    back only this (the sweep stays as it is)."""
    try:
        added = produce(session, store, sweep_id)
        session.commit()
        return added
    except Exception as error:
        session.rollback()
        log.warning("sweep %s: its artifacts were not recorded (%s: %s)", sweep_id, type(error).__name__, error)
        return []


def publish_in(sessions: sessionmaker[Session], store: BlobStore, sweep_id: str) -> list[str]:
    """:func:`produce` in a transaction of its own; never raises. Returns the filenames added."""
    try:
        with session_scope(sessions) as session:
            return [a.filename for a in produce(session, store, sweep_id)]
    except Exception as error:
        log.warning("sweep %s: its artifacts were not recorded (%s: %s)", sweep_id, type(error).__name__, error)
        return []


def unpublished(session: Session, limit: int = 4) -> list[str]:
    """Finished sweeps with no artifact at all (their producer died, or they ended before this existed)."""
    has_any = exists().where(Artifact.sweep_id == Sweep.id)
    query = select(Sweep.id).where(Sweep.status.in_(TERMINAL), ~has_any).order_by(Sweep.finished_at.desc())
    return list(session.scalars(query.limit(limit)))
