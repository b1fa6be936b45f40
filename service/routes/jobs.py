from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import select

from service import jobs as job_service
from service.deps import CurrentKey, QueueDep, SessionDep, SettingsDep, StoreDep
from service.errors import BadRequest, NotFound, ServiceUnavailable, responses
from service.models import JOB_STATUSES, Artifact, Job, JobEvent
from service.pagination import envelope, page
from service.schemas import ArtifactObject, EventObject, JobCreate, JobObject, ListObject

router = APIRouter(tags=["jobs"])
Status = Literal[JOB_STATUSES]  # type: ignore[valid-type]


@router.post("/v1/jobs", response_model=JobObject, status_code=201, responses=responses(400, 401, 404, 409, 422, 503))
def create_job(
    body: JobCreate,
    response: Response,
    key: CurrentKey,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
):
    """Validate the recipe and its files, check its estimate against the service's limits, commit the job, then
    enqueue it (so no request leaves a phantom job)."""
    job, created = job_service.create_job(
        session, owner=key.owner, body=body, idempotency_key=idempotency_key, settings=settings
    )
    if not created:
        response.status_code = 200
        return job_service.render(job)
    session.commit()
    try:
        queue.enqueue(job.id)
    except Exception as error:
        job_service.fail_unqueued(session, job, f"the job queue is unreachable ({type(error).__name__})")
        session.commit()
        raise ServiceUnavailable(
            "the job queue is unreachable; the job was not started", code="queue_unavailable"
        ) from None
    return job_service.render(job)


@router.get("/v1/jobs", response_model=ListObject[JobObject], responses=responses(400, 401, 422))
def list_jobs(
    key: CurrentKey,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Status | None = None,
):
    query = select(Job).where(Job.owner == key.owner)
    if status is not None:
        query = query.where(Job.status == status)
    return page(session, query, Job, owner=key.owner, after=after, limit=limit, render=job_service.render)


@router.get("/v1/jobs/{job_id}", response_model=JobObject, responses=responses(401, 404))
async def get_job(job_id: str, key: CurrentKey, request: Request):
    """The route clients poll. A rendered job is reused for JOB_CACHE_S (the worker writes progress about once a
    second, so a poll sees it at most that much later); otherwise one thread-pool hand-off reads it."""
    # (The docstring is the route's OpenAPI description.) Polls of this job that miss the cache while a read is under
    # way share that read: an expired entry polled by 50 clients costs one hand-off and one query, not 50.
    state = request.app.state
    cached = (key.owner, job_id)
    body = state.job_cache.get(cached)
    if body is None:

        def read() -> str:
            with state.sessions() as session:
                job = job_service.get_job(session, owner=key.owner, job_id=job_id)
                body = job_service.render(job).model_dump_json()
            state.job_cache.put(cached, body)
            return body

        body = await state.job_reads.run(cached, lambda: run_in_threadpool(read))
    return Response(body, media_type="application/json")


@router.get("/v1/jobs/{job_id}/events", response_model=ListObject[EventObject], responses=responses(400, 401, 404))
def list_events(
    job_id: str,
    key: CurrentKey,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
):
    """Newest first. ``after`` is an event id (``evt_...``) from a previous page."""
    job_service.get_job(session, owner=key.owner, job_id=job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        if not after.startswith("evt_") or not after[4:].isdigit():
            raise BadRequest(f"no event {after!r} to page after", param="after")
        query = query.where(JobEvent.id < int(after[4:]))
    rows = list(session.scalars(query.order_by(JobEvent.id.desc()).limit(limit + 1)))
    return envelope([job_service.render_event(e) for e in rows[:limit]], has_more=len(rows) > limit)


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobObject, responses=responses(401, 404, 409))
def cancel_job(job_id: str, key: CurrentKey, session: SessionDep, request: Request):
    """Idempotent: cancelling a cancelled job returns it; a job that already succeeded or failed is a 409."""
    job = job_service.render(job_service.cancel_job(session, owner=key.owner, job_id=job_id))
    request.app.state.job_cache.drop((key.owner, job_id))  # the caller sees its own change at once
    return job


@router.get("/v1/jobs/{job_id}/artifacts", response_model=ListObject[ArtifactObject], responses=responses(401, 404))
def list_artifacts(job_id: str, key: CurrentKey, session: SessionDep):
    job_service.get_job(session, owner=key.owner, job_id=job_id)
    rows = list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.created_at)))
    return envelope([job_service.render_artifact(a) for a in rows], has_more=False)


@router.get("/v1/artifacts/{artifact_id}", response_model=ArtifactObject, responses=responses(401, 404))
def get_artifact(artifact_id: str, key: CurrentKey, session: SessionDep):
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.owner != key.owner:
        raise NotFound(f"no artifact {artifact_id!r}", param="artifact_id")
    return job_service.render_artifact(artifact)


@router.get("/v1/artifacts/{artifact_id}/content", response_class=FileResponse, responses=responses(401, 404))
def artifact_content(artifact_id: str, key: CurrentKey, session: SessionDep, store: StoreDep):
    """The artifact's bytes; ``X-Content-SHA256`` carries its digest; ``Range`` requests are honoured."""
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.owner != key.owner:
        raise NotFound(f"no artifact {artifact_id!r}", param="artifact_id")
    return FileResponse(
        store.path(artifact.sha256), filename=artifact.filename, headers={"X-Content-SHA256": artifact.sha256}
    )
