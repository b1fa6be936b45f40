from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from service import jobs as job_service
from service.deps import CurrentKey, Cursor, EventCursor, QueueDep, SessionDep, SettingsDep
from service.errors import ServiceUnavailable
from service.http_errors import responses
from service.schemas import EventList, JobCreate, JobList, JobObject, JobStatus

router = APIRouter(tags=["jobs"])
REPLAY = {200: {"model": JobObject, "description": "An idempotent replay: the job this Idempotency-Key created"}}


@router.post(
    "/v1/jobs",
    response_model=JobObject,
    status_code=201,
    operation_id="createJob",
    responses={**REPLAY, **responses(400, 401, 404, 409, 422, 429, 503)},
)
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
        if job.status == "queued":  # the request that made it may have died between its commit and its publish
            job_service.republish(queue, job.id)
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


@router.get("/v1/jobs", response_model=JobList, operation_id="listJobs", responses=responses(401, 404, 422))
def list_jobs(
    key: CurrentKey,
    session: SessionDep,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: JobStatus | None = None,
):
    return job_service.list_jobs(
        session, owner=key.owner, status=status.value if status else None, after=after, limit=limit
    )


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobObject,
    operation_id="getJob",
    description="A job: status, progress, its latest progress report (live), metrics, warnings and error. Poll it: "
    "it shows the worker's progress about a second late at most.",
    responses=responses(401, 404),
)
async def get_job(job_id: str, key: CurrentKey, request: Request):
    """The route clients poll. A rendered job is reused for JOB_CACHE_S (the worker writes progress about once a
    second, so a poll sees it at most that much later); otherwise one thread-pool hand-off reads it."""
    # (The document's description is the decorator's: this docstring is for readers of the code.) Polls of this job
    # that miss the cache while a read is under way share that read: an expired entry polled by 50 clients costs one
    # hand-off and one query, not 50.
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


@router.get(
    "/v1/jobs/{job_id}/events",
    response_model=EventList,
    operation_id="listJobEvents",
    summary="List a job's events",
    responses=responses(401, 404, 422),
)
def list_events(
    job_id: str,
    key: CurrentKey,
    session: SessionDep,
    after: EventCursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
):
    """Newest first. ``after`` is an event id (``evt_...``) from a previous page."""
    return job_service.list_events(session, owner=key.owner, job_id=job_id, after=after, limit=limit)


@router.post(
    "/v1/jobs/{job_id}/cancel", response_model=JobObject, operation_id="cancelJob", responses=responses(401, 404, 409)
)
def cancel_job(job_id: str, key: CurrentKey, session: SessionDep, request: Request):
    """Idempotent: cancelling a cancelled job returns it; a job that already succeeded or failed is a 409."""
    job = job_service.render(job_service.cancel_job(session, owner=key.owner, job_id=job_id))
    request.app.state.job_cache.drop((key.owner, job_id))  # the caller sees its own change at once
    return job
