"""Jobs: validated against the recipe contract and the owner's files, committed, then enqueued by task name."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from compress import tasks
from compress.spec import Recipe, format_validation_error
from service import lifecycle
from service.admission import admit
from service.errors import BadRequest, Conflict, NotFound, Unprocessable
from service.files import get_file, lock_files
from service.pagination import envelope, page
from service.schemas import (
    ArtifactObject,
    EventObject,
    JobCreate,
    JobError,
    JobLive,
    JobObject,
    JobWarning,
    unix,
)
from service.settings import Settings
from service.tables import Artifact, Job, JobEvent

log = logging.getLogger("sparseq.jobs")


def render(job: Job) -> JobObject:
    return JobObject(
        id=job.id,
        status=job.status,
        recipe=job.recipe,
        files=job.files,
        progress=job.progress,
        metrics=job.metrics or {},
        error=JobError(**job.error) if job.error else None,
        warnings=[JobWarning(**w) for w in job.warnings or []],
        live=JobLive(**job.live) if job.live else None,
        attempts=job.attempts,
        worker=job.worker,
        device=job.device,
        created_at=unix(job.created_at),
        started_at=unix(job.started_at),
        finished_at=unix(job.finished_at),
    )


def render_event(event: JobEvent) -> EventObject:
    return EventObject(
        id=f"evt_{event.id}",
        created_at=unix(event.created_at),
        level=event.level,
        type=event.type,
        message=event.message,
        data=event.data or {},
    )


def render_artifact(artifact: Artifact) -> ArtifactObject:
    return ArtifactObject(
        id=artifact.id,
        job_id=artifact.job_id,
        sweep_id=artifact.sweep_id,
        kind=artifact.kind,
        filename=artifact.filename,
        bytes=artifact.bytes,
        sha256=artifact.sha256,
        created_at=unix(artifact.created_at),
    )


def parse_recipe(raw: dict[str, Any]) -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as error:
        first = format_validation_error(error)[0]
        param = f"recipe.{first['param']}" if first["param"] else "recipe"
        raise Unprocessable(first["message"], param=param, code="invalid_recipe") from None


def _check_files(session: Session, owner: str, recipe: Recipe, files: dict[str, str]) -> None:
    roles = tasks.get(recipe.task.type).roles
    for role in files:
        if role not in roles:
            raise BadRequest(
                f"the {recipe.task.type} task takes no '{role}' file (it takes {sorted(roles) or 'none'})",
                param=f"files.{role}",
            )
    for name, role in roles.items():
        if name not in files:
            if role.required:
                raise BadRequest(f"the {recipe.task.type} task needs a '{name}' file", param=f"files.{name}")
            continue
        _check_one(session, owner, files[name], role.purpose, f"files.{name}")
    if recipe.init_from is not None:
        weights = _check_one(session, owner, recipe.init_from, "weights", "recipe.init_from")
        _check_weights(session, owner, recipe, files, weights)


def _check_weights(session: Session, owner: str, recipe: Recipe, files: dict[str, str], weights) -> None:
    """An init_from file must hold the recipe's tensors with the recipe's shapes (its header, read at upload, is in
    its stats), and a text task's weights need the vocabulary their rows follow."""
    shapes = (weights.stats or {}).get("shapes")
    sizes: dict[str, int] = {}
    needs = tasks.get(recipe.task.type).data_sizes
    if "vocab_size" in needs:
        if "vocabulary" in files:
            sizes["vocab_size"] = get_file(session, owner=owner, file_id=files["vocabulary"]).stats["tokens"]
        elif (weights.stats or {}).get("vocabulary_size"):
            sizes["vocab_size"] = weights.stats["vocabulary_size"]
        else:
            raise Unprocessable(
                "init_from: a text model's embedding and decoder rows follow a vocabulary: upload it with purpose "
                "'vocabulary' (one token a line, in id order) and pass it as files.vocabulary, or store it in the "
                "weights file's metadata under 'vocabulary' (a JSON list)",
                param="files.vocabulary",
                code="vocabulary_required",
            )
        if "num_tags" in needs:
            train = get_file(session, owner=owner, file_id=files["train"])
            sizes["num_tags"] = (weights.stats or {}).get("tags") or train.stats.get("tags", 1)
    if shapes is None:  # more tensors than the upload listed: the worker checks them before training
        return
    from compress.weights import compare_weights, weight_contract

    mismatch = compare_weights(weight_contract(recipe, sizes), shapes)
    if mismatch:
        raise Unprocessable(
            f"init_from: the weights do not fit the recipe's model: {mismatch.describe()} (POST /v1/estimate lists "
            "the names and shapes the recipe needs)",
            param="recipe.init_from",
            code="weights_mismatch",
        )


def _check_one(session: Session, owner: str, file_id: str, purpose: str, param: str):
    try:
        file = get_file(session, owner=owner, file_id=file_id)
    except NotFound:
        raise NotFound(f"no file {file_id!r}", param=param) from None
    if file.purpose != purpose:
        raise BadRequest(f"file {file_id} has purpose '{file.purpose}', this role needs '{purpose}'", param=param)
    if file.status != "processed":
        raise BadRequest(f"file {file_id} did not pass validation: {file.status_detail}", param=param)
    return file


def request_hash(body: JobCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


def create_job(
    session: Session, *, owner: str, body: JobCreate, idempotency_key: str | None, settings: Settings | None = None
) -> tuple[Job, bool]:
    """Returns (job, created). The same key with the same body gives the same job; a different body is a conflict.
    With ``settings``, the recipe's estimate must fit their admission limits (service.admission)."""
    digest = request_hash(body)
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            return _replay(existing, digest), False
    recipe = parse_recipe(body.recipe)
    check_job(session, owner=owner, recipe=recipe, files=body.files, settings=settings)
    job = Job(
        owner=owner,
        status="queued",
        recipe=json.loads(recipe.model_dump_json()),
        files=body.files,
        idempotency_key=idempotency_key,
        request_hash=digest,
        metrics={},
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request with the same key won the race
        session.rollback()
        return _replay(_by_idempotency_key(session, owner, idempotency_key), digest), False
    session.add(JobEvent(job_id=job.id, level="info", type="message", message="job queued"))
    return job, True


def check_job(
    session: Session, *, owner: str, recipe: Recipe, files: dict[str, str], settings: Settings | None
) -> None:
    """The checks of a parsed recipe against its files and (with ``settings``) the admission limits: a sweep runs
    them on every combination before it creates any job."""
    lock_files(session, [*files.values(), recipe.init_from])  # no delete slips between the checks and the commit
    _check_files(session, owner, recipe, files)
    if settings is not None:
        train = files.get("train")
        tokens = (get_file(session, owner=owner, file_id=train).stats or {}).get("tokens") if train else None
        admit(recipe, settings, train_tokens=tokens)


def _by_idempotency_key(session: Session, owner: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))


def _replay(job: Job, digest: str) -> Job:
    if job.request_hash != digest:
        raise Conflict(
            "this Idempotency-Key was used with a different request body",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    return job


def get_job(session: Session, *, owner: str, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.owner != owner:
        raise NotFound(f"no job {job_id!r}", param="job_id")
    return job


def cancel_job(session: Session, *, owner: str, job_id: str) -> Job:
    job = get_job(session, owner=owner, job_id=job_id)
    if not lifecycle.request_cancel(session, job):
        raise Conflict(f"job {job_id} has already {job.status}", param="job_id", code="job_finished")
    return job


def fail_unqueued(session: Session, job: Job, reason: str) -> None:
    lifecycle.finish(session, job.id, "failed", message=reason, error={"code": "queue_unavailable", "message": reason})


def republish(queue, job_id: str) -> None:
    """An idempotent replay of a queued job: publish it again unless the broker holds a message for it. Duplicates are
    harmless (the worker's compare-and-set claim runs a job once); a broker that does not answer is left to the
    workers' reconciler, which publishes every queued job the broker does not hold."""
    try:
        if queue.ensure_enqueued(job_id):
            log.warning("job %s was queued without a message in the broker: published again", job_id)
    except Exception as error:
        log.warning("job %s: the broker did not answer a replay (%s); the reconciler will publish it", job_id, error)


# -- reading ----------------------------------------------------------------------------------------------------------


def list_jobs(session: Session, *, owner: str, status: str | None, after: str | None, limit: int):
    query = select(Job).where(Job.owner == owner)
    if status is not None:
        query = query.where(Job.status == status)
    return page(session, query, Job, owner=owner, after=after, limit=limit, render=render)


def list_events(session: Session, *, owner: str, job_id: str, after: str | None, limit: int):
    """Newest first; ``after`` is an event id (``evt_...``); an empty cursor is no cursor."""
    get_job(session, owner=owner, job_id=job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after:
        if not after.startswith("evt_") or not after[4:].isdigit():
            raise NotFound(f"no event {after!r} to page after", param="after")
        query = query.where(JobEvent.id < int(after[4:]))
    rows = list(session.scalars(query.order_by(JobEvent.id.desc()).limit(limit + 1)))
    return envelope([render_event(e) for e in rows[:limit]], has_more=len(rows) > limit)


def list_artifacts(session: Session, *, owner: str, job_id: str):
    get_job(session, owner=owner, job_id=job_id)
    rows = list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.created_at)))
    return envelope([render_artifact(a) for a in rows], has_more=False)


def get_artifact(session: Session, *, owner: str, artifact_id: str) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.owner != owner:
        raise NotFound(f"no artifact {artifact_id!r}", param="artifact_id")
    return artifact


def count_by_status(session: Session) -> dict[str, int]:
    """Jobs per status over every owner (the /metrics gauge, which names no owner)."""
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
