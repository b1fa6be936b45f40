"""The one task: run a job by id.

Delivery is at least once (acks late, redelivery after a crash), so the task asserts the world itself: it re-reads the
job, compare-and-sets it to running, counts the attempt and gives up after ``max_attempts``; a redelivered job resumes
from its last training state. Terminal states are never changed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update

import compress.pipeline  # noqa: F401  - import torch and the library when the worker starts, not on its first job
from service.db import make_engine, make_sessionmaker, session_scope
from service.files import lock_blob, release_blob
from service.models import Artifact, Job, JobEvent, utcnow
from service.queue import TASK_NAME
from service.settings import get_settings
from service.storage import BlobStore
from workers.celery_app import app

log = logging.getLogger("sparseq.worker")
HEARTBEAT_S = 5.0
ARTIFACT_KINDS = {".safetensors": "checkpoint", ".json": "report", ".png": "plot", ".onnx": "export"}
# Export artifacts that share a suffix with the checkpoint (compress.export): matched on the whole name first.
EXPORT_NAMES = {"model.dense.safetensors": "export"}


class _Context:
    _cached = None

    @classmethod
    def get(cls):
        if cls._cached is None:
            settings = get_settings()
            engine = make_engine(settings.resolved_database_url)
            cls._cached = (settings, make_sessionmaker(engine), BlobStore(settings.resolved_blob_dir))
        return cls._cached


def claim(sessions, job_id: str, max_attempts: int, stale_after: timedelta) -> str:
    """Compare-and-set queued (or a running job whose worker died) -> running. Returns what happened."""
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        if job is None:
            return "missing"
        if job.status in ("succeeded", "failed", "cancelled"):
            return "finished"
        if job.status == "cancelling":
            job.status, job.finished_at = "cancelled", utcnow()
            return "cancelled"
        stale = utcnow() - stale_after
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id)
            .where(or_(Job.status == "queued", (Job.status == "running") & (Job.heartbeat_at < stale)))
            .values(status="running", attempts=Job.attempts + 1, started_at=utcnow(), heartbeat_at=utcnow())
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
            session.add(
                JobEvent(
                    job_id=job_id,
                    level="warning",
                    type="message",
                    message=f"attempt {job.attempts}: resuming after an interrupted run",
                )
            )
        session.add(JobEvent(job_id=job_id, level="info", type="message", message="job started"))
        return "claimed"


class _Heartbeat:
    """Writes heartbeat_at every HEARTBEAT_S seconds from a thread, so a long evaluation or checkpoint write never
    makes a live job look dead to the reaper."""

    def __init__(self, sessions, job_id: str) -> None:
        self.sessions, self.job_id = sessions, job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with session_scope(self.sessions) as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == self.job_id, Job.status.in_(("running", "cancelling")))
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:
                log.exception("heartbeat for %s failed", self.job_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S + 5)


class JobReporter:
    """Callbacks of compress.train writing to the database: progress, events, cancellation (the heartbeat is the
    _Heartbeat thread's alone)."""

    def __init__(self, sessions, job_id: str) -> None:
        self.sessions, self.job_id = sessions, job_id
        self.last_check = 0.0
        self.cancel_seen = False

    def progress(self, p) -> None:
        with session_scope(self.sessions) as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(progress=round(p.fraction, 4)))

    def event(self, level: str, kind: str, message: str, data: dict) -> None:
        clean = {k: v for k, v in data.items() if isinstance(v, int | float | str | bool) or v is None}
        with session_scope(self.sessions) as session:
            session.add(JobEvent(job_id=self.job_id, level=level, type=kind, message=message, data=clean))

    def cancelled(self) -> bool:
        now = time.monotonic()
        if now - self.last_check < 1.0:
            return self.cancel_seen
        self.last_check = now
        with self.sessions() as session:  # a read: POST /cancel sets the status
            self.cancel_seen = session.scalar(select(Job.status).where(Job.id == self.job_id)) == "cancelling"
        return self.cancel_seen


def _materialise(store: BlobStore, sessions, job: Job, directory: Path) -> dict[str, Path]:
    from service.models import File

    paths = {}
    with session_scope(sessions) as session:
        roles = dict(job.files)
        if job.recipe.get("init_from"):
            roles["init_from"] = job.recipe["init_from"]
        for role, file_id in roles.items():
            file = session.get(File, file_id)
            if file is None or file.deleted_at is not None or not store.exists(file.sha256):
                raise ValueError(f"file {file_id} ({role}) no longer exists")
            paths[role] = store.copy_to(file.sha256, directory / f"{role}-{file.filename}")
    return paths


def _finish(sessions, job_id: str, **values) -> None:
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return  # terminal states never change
        for key, value in values.items():
            setattr(job, key, value)
        job.finished_at = utcnow()
        session.add(
            JobEvent(
                job_id=job_id,
                level="error" if values.get("status") == "failed" else "info",
                type="message",
                message=f"job {values.get('status')}",
            )
        )


Staged = tuple[Path, Path, str, int]  # (an output file, its staged copy in the store, sha256, bytes)


def record_artifacts(sessions, store: BlobStore, job_id: str, owner: str, staged: list[Staged]) -> set[str]:
    """Place the staged outputs in the store and record them as the job's artifacts, replacing those of an earlier
    delivery. Returns the digests only the replaced artifacts used, for :func:`release_blob` once the job finished."""
    digests = {sha for *_, sha, _ in staged}
    with session_scope(sessions) as session:
        replaced = set(session.scalars(select(Artifact.sha256).where(Artifact.job_id == job_id)))
        session.query(Artifact).filter(Artifact.job_id == job_id).delete()
        for sha in sorted(digests):  # in one order: two workers never wait on each other
            lock_blob(session, sha)  # a file of the same bytes may be being deleted (see lock_blob)
        for path, temporary, sha, size in staged:
            store.commit(temporary, sha)
            kind = EXPORT_NAMES.get(path.name) or ARTIFACT_KINDS.get(path.suffix, "file")
            session.add(Artifact(job_id=job_id, owner=owner, kind=kind, filename=path.name, bytes=size, sha256=sha))
    return replaced - digests


def _release_quietly(sessions, store: BlobStore, job_id: str, digests: set[str]) -> None:
    """Housekeeping after a job finished: a failure here must not touch the job (sparseqd gc collects what is left)."""
    for sha in sorted(digests):
        try:
            release_blob(sessions, store, sha)
        except Exception as error:
            log.warning("job %s: the blob %s of a replaced artifact was not released (%s)", job_id, sha, error)


def run_job(job_id: str, *, work_root: Path | None = None) -> str:
    """Run one job to a terminal state (or leave it running for redelivery if this process dies)."""
    import compress
    from compress.spec import Recipe
    from compress.train import Callbacks, Cancelled

    settings, sessions, store = _Context.get()
    outcome = claim(sessions, job_id, settings.max_attempts, timedelta(seconds=settings.stale_after_s))
    if outcome != "claimed":
        log.info("job %s not run: %s", job_id, outcome)
        return outcome
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
    work = (work_root or settings.data_dir / "work") / job_id
    work.mkdir(parents=True, exist_ok=True)
    reporter = JobReporter(sessions, job_id)
    heartbeat = _Heartbeat(sessions, job_id)
    callbacks = Callbacks(
        progress=reporter.progress,
        event=reporter.event,
        cancelled=reporter.cancelled,
        state_path=work / "training-state.pt",
        progress_every=1.0,
    )
    staged: list[Staged] = []
    replaced: set[str] = set()
    try:
        heartbeat.start()
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            data = _materialise(store, sessions, job, Path(scratch))
            recipe = Recipe.model_validate(job.recipe)
            result = compress.run(recipe, data, callbacks, output_dir=work / "output")
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
        metrics["sparsity"] = result.report["parameters"]["sparsity"]
        metrics["checkpoint_bytes"] = result.report["checkpoint_bytes"]
        for path in result.files:
            staged.append((path, *store.stage_file(path)))
        replaced = record_artifacts(sessions, store, job_id, job.owner, staged)
        _finish(sessions, job_id, status="succeeded", progress=1.0, metrics=metrics)
        outcome = "succeeded"
    except Cancelled:
        _finish(sessions, job_id, status="cancelled")
        outcome = "cancelled"
    except Exception as error:  # a user-facing message, the trace only in the worker's log
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        message = str(error) or type(error).__name__
        _finish(sessions, job_id, status="failed", error={"code": type(error).__name__, "message": message[:2000]})
        outcome = "failed"
    finally:
        heartbeat.stop()
        for _, temporary, _, _ in staged:  # placed by a commit, or left over by a failure before it
            temporary.unlink(missing_ok=True)
    if replaced:  # the blobs of artifacts a redelivered run replaced (recorded, whatever became of the job then)
        _release_quietly(sessions, store, job_id, replaced)
    # Only a finished job loses its work directory: one interrupted by the worker's shutdown (a BaseException, which
    # passes through above) keeps its training state for the redelivery to resume from.
    shutil.rmtree(work, ignore_errors=True)
    return outcome


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job_task(self, job_id: str) -> str:
    outcome = run_job(job_id)
    if outcome == "busy":
        # Another delivery holds the job. If its worker is alive this retry finds the job finished; if it died, the
        # retry arrives after the heartbeat went stale and takes the job over. Acknowledging and forgetting would
        # lose the job when its holder is dead.
        settings = get_settings()
        raise self.retry(countdown=settings.stale_after_s + HEARTBEAT_S, max_retries=None)
    return outcome
