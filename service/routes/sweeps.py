"""Sweeps: a grid of recipes run as ordinary jobs, at most max_parallel at once (service.sweeps)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from service import sweep_report
from service import sweeps as sweep_service
from service.deps import CurrentKey, Cursor, QueueDep, SessionDep, SettingsDep, StoreDep
from service.http_errors import responses
from service.schemas import SweepCreate, SweepList, SweepObject

router = APIRouter(tags=["sweeps"])


def _enqueue(queue, job_ids: list[str]) -> None:
    """After the commit. A publish that fails leaves the job queued: the workers' reconciler publishes it."""
    for job_id in job_ids:
        try:
            queue.enqueue(job_id)
        except Exception:
            break


@router.post(
    "/v1/sweeps",
    response_model=SweepObject,
    status_code=201,
    operation_id="createSweep",
    responses={
        200: {"model": SweepObject, "description": "An idempotent replay: the sweep this Idempotency-Key created"},
        **responses(400, 401, 404, 409, 422, 429),
    },
)
def create_sweep(
    body: SweepCreate,
    response: Response,
    key: CurrentKey,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
):
    """Every combination is validated (recipe, files, admission) before any job is queued: one bad combination
    refuses the whole sweep with a 422 naming it (``combinations[i].<field>``)."""
    sweep, created, job_ids = sweep_service.create_sweep(
        session, owner=key.owner, body=body, idempotency_key=idempotency_key, settings=settings
    )
    if not created:
        response.status_code = 200
        return sweep_service.render(session, sweep)
    session.commit()
    _enqueue(queue, job_ids)
    return sweep_service.render(session, sweep)


@router.get("/v1/sweeps", response_model=SweepList, operation_id="listSweeps", responses=responses(401, 404, 422))
def list_sweeps(
    key: CurrentKey,
    session: SessionDep,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
):
    return sweep_service.list_sweeps(session, owner=key.owner, after=after, limit=limit)


@router.get("/v1/sweeps/{sweep_id}", response_model=SweepObject, operation_id="getSweep", responses=responses(401, 404))
def get_sweep(sweep_id: str, key: CurrentKey, session: SessionDep):
    """Status, progress (children by status) and the summary: per cell, the metric's mean and sample std over seeds."""
    return sweep_service.render(session, sweep_service.get_sweep(session, owner=key.owner, sweep_id=sweep_id))


@router.post(
    "/v1/sweeps/{sweep_id}/cancel",
    response_model=SweepObject,
    operation_id="cancelSweep",
    responses=responses(401, 404),
)
def cancel_sweep(sweep_id: str, key: CurrentKey, session: SessionDep, store: StoreDep):
    """Idempotent: held combinations never start, queued children are cancelled, running ones stop between steps.
    The cancelled sweep's artifacts (summary.json, summary.csv, pareto.png) are made before the answer."""
    sweep = sweep_service.cancel_sweep(session, owner=key.owner, sweep_id=sweep_id)
    session.commit()  # the cancel stands whatever becomes of its artifacts
    sweep_report.publish(session, store, sweep.id)
    return sweep_service.render(session, sweep)
