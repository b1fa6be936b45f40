"""The job state machine: every status change of a job, in one module used by the API, the workers and the reaper.

    validating -> queued -> running -> succeeded | failed | cancelled
                     |         '-> cancelling -> cancelled
                     '-> cancelled (before it started) | failed (never published)

Each change is a compare-and-set (an UPDATE whose WHERE names the status it leaves), so two workers, a worker and the
reaper, or a duplicate delivery can race and only one wins. A worker claims a ``queued`` job, or a ``running`` one
whose heartbeat is older than ``stale_after`` (its worker died), counting ``attempts``; past ``max_attempts`` the
job fails. A ``cancelling`` job is finished by its own worker between two steps, or cancelled here once its
heartbeat is stale. Terminal statuses never change. Free of any web framework and of torch.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.tables import JOB_STATUSES, LIVE, TERMINAL, Job, JobEvent, utcnow

__all__ = [
    "JOB_STATUSES",
    "LIVE",
    "ORPHAN_CANCELLED",
    "TERMINAL",
    "beat",
    "cancel_orphan",
    "claim",
    "finish",
    "orphaned_cancels",
    "request_cancel",
    "stale_running",
    "unclaimed_queued",
]

ORPHAN_CANCELLED = "job cancelled (its worker stopped before finishing the cancel)"


def _orphaned(stale_after: timedelta):
    return or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < utcnow() - stale_after)


def claim(
    session: Session,
    job_id: str,
    *,
    max_attempts: int,
    stale_after: timedelta,
    placement: dict[str, str] | None = None,
) -> str:
    """queued (or running with a stale heartbeat) -> running, recording ``placement`` (the worker and device that
    took it). Returns "claimed", "busy" (another worker holds it), "finished", "missing", "cancelled" (a cancelling
    job whose worker is gone) or "gave_up" (too many attempts)."""
    job = session.get(Job, job_id)
    if job is None:
        return "missing"
    if job.status in TERMINAL:
        return "finished"
    if job.status == "cancelling":
        return "cancelled" if cancel_orphan(session, job_id, stale_after=stale_after) else "busy"
    stale = utcnow() - stale_after
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .where(or_(Job.status == "queued", (Job.status == "running") & (Job.heartbeat_at < stale)))
        .values(
            status="running", attempts=Job.attempts + 1, started_at=utcnow(), heartbeat_at=utcnow(), **(placement or {})
        )
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if not claimed:
        return "busy"  # another worker holds it (a duplicate delivery)
    session.refresh(job)
    if job.attempts > max_attempts:
        job.status, job.finished_at = "failed", utcnow()
        job.error = {"code": "too_many_attempts", "message": f"gave up after {max_attempts} attempts"}
        return "gave_up"
    if job.attempts > 1:
        message = f"attempt {job.attempts}: resuming after an interrupted run"
        session.add(JobEvent(job_id=job_id, level="warning", type="message", message=message))
    session.add(JobEvent(job_id=job_id, level="info", type="message", message="job started"))
    return "claimed"


def cancel_orphan(session: Session, job_id: str, *, stale_after: timedelta) -> bool:
    """cancelling -> cancelled when no live worker holds the job (no heartbeat, or a stale one)."""
    before = session.get(Job, job_id)
    started = before is not None and before.heartbeat_at is not None
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "cancelling", _orphaned(stale_after))
        .values(status="cancelled", finished_at=utcnow())
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if changed:
        message = ORPHAN_CANCELLED if started else "job cancelled before it started"
        session.add(JobEvent(job_id=job_id, level="info", type="message", message=message))
    return bool(changed)


def request_cancel(session: Session, job: Job) -> bool:
    """The owner's cancel: a running job -> cancelling (its worker finishes it), a queued one -> cancelled. False
    when the job had already finished otherwise (the caller answers a conflict)."""
    if job.status in ("cancelling", "cancelled"):
        return True
    if job.status in TERMINAL:
        return False
    if job.status == "running":
        job.status = "cancelling"  # the worker checks between steps and finishes the cancel
        message = "cancellation requested"
    else:
        job.status, job.finished_at = "cancelled", utcnow()
        message = "job cancelled before it started"
    session.add(JobEvent(job_id=job.id, level="info", type="message", message=message))
    session.flush()
    return True


def beat(session: Session, job_id: str) -> None:
    """The worker is alive: heartbeat_at = now, while the job is still its own (running or cancelling)."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(("running", "cancelling"))).values(heartbeat_at=utcnow())
    )


def finish(session: Session, job_id: str, status: str, *, message: str | None = None, **values) -> bool:
    """A live job -> a terminal ``status`` with its fields (its event says ``message``, else "job <status>"); never
    changes a job that already ended."""
    if status not in TERMINAL:
        raise ValueError(f"{status!r} is not a terminal status ({', '.join(TERMINAL)})")
    job = session.get(Job, job_id)
    if job is None or job.status in TERMINAL:
        return False
    for key, value in values.items():
        setattr(job, key, value)
    job.status, job.finished_at = status, utcnow()
    level = "error" if status == "failed" else "info"
    session.add(JobEvent(job_id=job_id, level=level, type="message", message=message or f"job {status}"))
    return True


def unclaimed_queued(session: Session, *, older_than: timedelta) -> list[str]:
    """Queued jobs committed longer ago than ``older_than``: the reconciler checks the broker holds them."""
    before = utcnow() - older_than
    return list(session.scalars(select(Job.id).where(Job.status == "queued", Job.created_at < before)))


def stale_running(session: Session, *, stale_after: timedelta, among: list[str] | None = None) -> list[str]:
    """Running jobs whose heartbeat is older than ``stale_after``: their worker died."""
    query = select(Job.id).where(Job.status == "running", Job.heartbeat_at < utcnow() - stale_after)
    if among is not None:
        query = query.where(Job.id.in_(among))
    return list(session.scalars(query))


def orphaned_cancels(session: Session, *, stale_after: timedelta) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.status == "cancelling", _orphaned(stale_after))))
