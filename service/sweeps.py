"""Sweeps: a base recipe and a grid (cartesian product) and/or overrides (one combination each), every combination
validated (recipe, files, admission) before any job exists; the combinations become ordinary jobs (``sweep_id``), at
most ``max_parallel`` of them live at once. :func:`release` turns the next held combinations into queued jobs; the
worker calls it when a child ends and the reconciler every round, so a lost release still happens (the reconciler
also publishes a queued job whose message never reached the broker).

Summary: one row per cell (a combination without ``training.seed``): the metric's mean and its *sample* standard
deviation over the cell's succeeded seeds (``statistics.stdev``, n - 1; null with one seed), its reference, sparsity,
checkpoint bytes and speed-up where the jobs measured them.

A finished sweep (succeeded, failed or cancelled) gets artifacts of its own, made by service.sweep_report: the summary
as summary.json and summary.csv, and pareto.png.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import statistics
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service import jobs as job_service
from service.errors import APIError, Conflict, NotFound, Unprocessable
from service.pagination import page
from service.settings import Settings
from service.tables import LIVE, Artifact, Job, JobEvent, Sweep, utcnow

SEED = "training.seed"
MEASURES = ("value", "reference", "sparsity", "checkpoint_bytes", "speedup_latency", "speedup_throughput")


def set_path(recipe: dict, path: str, value: Any) -> dict:
    node = recipe
    *parents, leaf = path.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value
    return recipe


def combinations(grid: dict[str, list], overrides: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid's cartesian product (in the grid's key order) crossed with each override (none: the grid alone)."""
    keys = list(grid)
    product = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    return [{**g, **o} for g in product for o in (overrides or [{}])]


def expand(session: Session, *, owner: str, body, settings: Settings) -> list[dict]:
    """Every combination as ``{index, overrides, recipe}`` with its recipe validated the way POST /v1/jobs validates
    one; the first bad one raises a 422 naming its index, its overrides and the field."""
    combos = combinations(body.grid, body.overrides)
    if len(combos) > settings.max_sweep_jobs:
        raise Unprocessable(
            f"the sweep has {len(combos):,} combinations, over this service's limit of {settings.max_sweep_jobs:,} "
            "(SPARSEQ_MAX_SWEEP_JOBS)",
            param="grid",
            code="limit_exceeded",
        )
    cells = []
    for index, overrides in enumerate(combos):
        raw = copy.deepcopy(body.recipe)
        for path, value in overrides.items():
            set_path(raw, path, value)
        try:
            recipe = job_service.parse_recipe(raw)
            job_service.check_job(session, owner=owner, recipe=recipe, files=body.files, settings=settings)
        except APIError as error:
            error.status = 422 if error.status in (400, 422) else error.status
            error.message = f"combination {index} {json.dumps(overrides, sort_keys=True)}: {error.message}"
            error.param = f"combinations[{index}].{error.param}" if error.param else f"combinations[{index}]"
            raise
        cells.append({"index": index, "overrides": overrides, "recipe": json.loads(recipe.model_dump_json())})
    return cells


def request_hash(body) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


def create_sweep(session: Session, *, owner: str, body, idempotency_key: str | None, settings: Settings):
    """Returns (sweep, created, job ids to enqueue after the commit)."""
    digest = request_hash(body)
    if idempotency_key is not None:
        existing = session.scalar(select(Sweep).where(Sweep.owner == owner, Sweep.idempotency_key == idempotency_key))
        if existing is not None:
            if existing.request_hash != digest:
                raise Conflict(
                    "this Idempotency-Key was used with a different request body",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            return existing, False, []
    cells = expand(session, owner=owner, body=body, settings=settings)
    sweep = Sweep(
        owner=owner,
        status="running",
        recipe=body.recipe,
        files=body.files,
        cells=cells,
        max_parallel=body.max_parallel,
        released=0,
        idempotency_key=idempotency_key,
        request_hash=digest,
    )
    session.add(sweep)
    session.flush()
    return sweep, True, release(session, sweep.id)


def release(session: Session, sweep_id: str) -> list[str]:
    """Turn held combinations into queued jobs while fewer than max_parallel children are live; finish the sweep when
    every child ended. Returns the new jobs' ids (the caller enqueues them after its commit; unpublished ones are
    published by the reconciler). Safe to call any number of times, from anywhere: the sweep row is locked."""
    # A write to the sweep's row first: it takes the row lock on PostgreSQL and the database's write lock on SQLite,
    # which ignores FOR UPDATE; there, a worker's release and the reconciler's both counted the same live children
    # and each added one (3 live at max_parallel 2, in a system test)
    session.execute(
        update(Sweep).where(Sweep.id == sweep_id).values(released=Sweep.released),
        execution_options={"synchronize_session": False},
    )
    sweep = session.scalar(select(Sweep).where(Sweep.id == sweep_id).with_for_update())
    if sweep is None or sweep.status != "running":
        return []
    live = session.scalar(select(func.count()).where(Job.sweep_id == sweep_id, Job.status.in_(LIVE)))
    created = []
    while live < sweep.max_parallel and sweep.released < len(sweep.cells):
        cell = sweep.cells[sweep.released]
        job = Job(
            owner=sweep.owner,
            status="queued",
            recipe=cell["recipe"],
            files=sweep.files,
            metrics={},
            sweep_id=sweep.id,
        )
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, level="info", type="message", message=f"job queued by sweep {sweep.id}"))
        created.append(job.id)
        sweep.released += 1
        live += 1
    if live == 0 and sweep.released >= len(sweep.cells):
        children = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
        sweep.status = "succeeded" if all(j.status == "succeeded" for j in children) else "failed"
        sweep.finished_at = utcnow()
        sweep.summary = summarize(sweep, children)
    return created


def get_sweep(session: Session, *, owner: str, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.owner != owner:
        raise NotFound(f"no sweep {sweep_id!r}", param="sweep_id")
    return sweep


def children(session: Session, sweep_id: str) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.created_at, Job.id)))


def cancel_sweep(session: Session, *, owner: str, sweep_id: str) -> Sweep:
    """Held combinations never start; queued children are cancelled, running ones asked to stop."""
    sweep = get_sweep(session, owner=owner, sweep_id=sweep_id)
    if sweep.status != "running":
        return sweep
    for job in children(session, sweep_id):
        if job.status in ("queued", "running"):
            job_service.cancel_job(session, owner=owner, job_id=job.id)
    sweep.status, sweep.finished_at = "cancelled", utcnow()
    sweep.summary = summarize(sweep, children(session, sweep_id))
    session.flush()
    return sweep


def list_artifacts(session: Session, *, owner: str, sweep_id: str):
    """The sweep's own artifacts (service.sweep_report: made once it finished); its children's are theirs."""
    from service.jobs import render_artifact
    from service.pagination import envelope

    get_sweep(session, owner=owner, sweep_id=sweep_id)
    query = select(Artifact).where(Artifact.sweep_id == sweep_id).order_by(Artifact.created_at, Artifact.filename)
    return envelope([render_artifact(a) for a in session.scalars(query)], has_more=False)


def progress(sweep: Sweep, jobs: list[Job]) -> dict[str, int]:
    counts = {"held": len(sweep.cells) - sweep.released if sweep.status == "running" else 0}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    return counts


def _cell_key(overrides: dict) -> str:
    return json.dumps({k: v for k, v in overrides.items() if k != SEED}, sort_keys=True)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarize(sweep: Sweep, jobs: list[Job]) -> dict:
    """One row per cell, over its succeeded seeds. A child belongs to the combination whose validated recipe it
    carries (jobs are made from exactly that recipe; equal recipes are interchangeable)."""
    unused = list(jobs)
    by_index = {}
    for cell in sweep.cells[: sweep.released]:
        match = next((j for j in unused if j.recipe == cell["recipe"]), None)
        if match is not None:
            unused.remove(match)
            by_index[cell["index"]] = match
    rows: dict[str, dict] = {}
    for cell in sweep.cells:
        key = _cell_key(cell["overrides"])
        row = rows.setdefault(key, {"overrides": json.loads(key), "jobs": [], "seeds": [], "_m": {}})
        job = by_index.get(cell["index"])
        if job is None:
            continue
        row["jobs"].append(job.id)
        if job.status != "succeeded":
            continue
        row["seeds"].append(cell["overrides"].get(SEED, job.recipe.get("training", {}).get("seed")))
        metrics = job.metrics or {}
        for name in MEASURES:
            if isinstance(metrics.get(name), int | float):
                row["_m"].setdefault(name, []).append(float(metrics[name]))
        row["metric"] = metrics.get("name")
        row["lower_is_better"] = metrics.get("lower_is_better")
    table = []
    for row in rows.values():
        measured = row.pop("_m")
        for name in MEASURES:
            mean, std = _mean_std(measured.get(name, []))
            row[f"{name}_mean"], row[f"{name}_std"] = mean, std
        row["n"] = len(measured.get("value", []))
        row.setdefault("metric", None)
        row.setdefault("lower_is_better", None)
        table.append(row)
    return {"std": "sample standard deviation (n - 1) over the cell's succeeded seeds", "cells": table}


def render(session: Session, sweep: Sweep):
    from service.schemas import SweepObject, unix

    jobs = children(session, sweep.id)
    summary = sweep.summary if sweep.summary is not None else summarize(sweep, jobs)
    return SweepObject(
        id=sweep.id,
        status=sweep.status,
        recipe=sweep.recipe,
        files=sweep.files,
        max_parallel=sweep.max_parallel,
        combinations=len(sweep.cells),
        progress=progress(sweep, jobs),
        jobs=[j.id for j in jobs],
        summary=summary,
        created_at=unix(sweep.created_at),
        finished_at=unix(sweep.finished_at),
    )


def list_sweeps(session: Session, *, owner: str, after: str | None, limit: int):
    return page(
        session,
        select(Sweep).where(Sweep.owner == owner),
        Sweep,
        owner=owner,
        after=after,
        limit=limit,
        render=lambda sweep: render(session, sweep),
    )
