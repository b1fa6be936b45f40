"""The one task: run a job by id.

Delivery is at least once (acks late, redelivery after a crash), so the task asserts the world itself: it re-reads the
job, compare-and-sets it to running, counts the attempt and gives up after ``max_attempts``; a redelivered job resumes
from its last training state. Terminal states are never changed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

import compress.pipeline  # noqa: F401  - import torch and the library when the worker starts, not on its first job
from service import lifecycle
from service.db import make_engine, make_sessionmaker, session_scope
from service.files import lock_blob, release_blob
from service.queue import QUEUE, TASK_NAME
from service.settings import get_settings
from service.storage import BlobStore, open_store
from service.tables import Artifact, Job, JobEvent
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
            cls._cached = (settings, make_sessionmaker(engine), open_store(settings))
        return cls._cached


def placement() -> dict[str, str]:
    """Which worker and device this process is: ``hostname/pid`` and ``cuda:N`` (SPARSEQ_WORKER_DEVICE, set by
    ``sparseqd worker --gpus``, else the first visible GPU) or ``cpu``."""
    import socket

    device = os.environ.get("SPARSEQ_WORKER_DEVICE")
    if not device:
        import torch

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    return {"worker": f"{socket.gethostname()}/{os.getpid()}", "device": device}


def claim(sessions, job_id: str, max_attempts: int, stale_after: timedelta) -> str:
    """The job's compare-and-set claim (service.lifecycle.claim), in its own transaction."""
    with session_scope(sessions) as session:
        return lifecycle.claim(
            session, job_id, max_attempts=max_attempts, stale_after=stale_after, placement=placement()
        )


class _Heartbeat:
    """Writes heartbeat_at every HEARTBEAT_S seconds from a thread, so a long evaluation or checkpoint write never
    makes a live job look dead to the reaper. At least three beats fit in ``stale_after_s`` (set small in tests)."""

    def __init__(self, sessions, job_id: str) -> None:
        self.sessions, self.job_id = sessions, job_id
        self.interval_s = min(HEARTBEAT_S, get_settings().stale_after_s / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with session_scope(self.sessions) as session:
                    lifecycle.beat(session, self.job_id)
            except Exception:
                log.exception("heartbeat for %s failed", self.job_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)


class JobReporter:
    """Callbacks of compress.train writing to the database: progress, events, cancellation (the heartbeat is the
    _Heartbeat thread's alone)."""

    def __init__(self, sessions, job_id: str) -> None:
        self.sessions, self.job_id = sessions, job_id
        self.last_check = 0.0
        self.cancel_seen = False

    def progress(self, p) -> None:
        with session_scope(self.sessions) as session:
            values = {"progress": round(p.fraction, 4), "live": live_state(p)}
            session.execute(update(Job).where(Job.id == self.job_id).values(**values))

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


def _number(value):
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def live_state(p) -> dict:
    """The job's ``live`` field from a compress.train Progress report."""
    evaluation = p.evaluation or {}
    return {
        "phase": p.phase,
        "step": p.step,
        "total_steps": p.total_steps,
        "loss": _number(p.metrics.get("train_loss")),
        "metric": p.metric,
        "value": _number(evaluation.get(p.metric)) if p.metric else None,
        "sparsity": _number(p.metrics.get("pruned_sparsity")),
        "eta_s": _number(p.metrics.get("eta_s")),
        "updated_at": int(time.time()),
    }


def job_fields(result) -> dict:
    """What a finished compress.run puts on the job (``result``: its metrics and report, from the job's process):
    its metrics with the verdict's headline, and the warnings."""
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    report = result.report
    metrics["sparsity"] = report["parameters"]["sparsity"]  # the one definition (compress.report.build_report)
    if report.get("pruning"):
        metrics["pruned_sparsity"] = report["pruning"]["sparsity"]
    metrics["checkpoint_bytes"] = report["checkpoint_bytes"]
    metrics |= report["verdict"]  # name, value, reference, ratio, lower_is_better, reference_kind, within_tolerance
    return {"metrics": metrics, "warnings": list(report["warnings"])}


def error_code(error: BaseException) -> str:
    """A stable code for a failed job: the library's own (``diverged``...) where it gives one."""
    code = getattr(error, "code", None)
    if isinstance(code, str) and code:
        return code
    return "invalid_input" if isinstance(error, ValueError | KeyError) else "internal_error"


def _materialise(store: BlobStore, sessions, job: Job, directory: Path) -> dict[str, Path]:
    from service.tables import File

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


def _finish(sessions, job_id: str, *, status: str, **values) -> None:
    with session_scope(sessions) as session:
        lifecycle.finish(session, job_id, status, **values)


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


@dataclass
class JobResult:
    """What the job's process sends back from compress.run's Result: its metrics and report whole (JSON), its files."""

    metrics: dict
    report: dict
    files: list[Path]


class JobFailed(Exception):
    """The job's process reported a failure (or died): ``code`` is the job's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _absolute_database_url(url: str) -> str:
    """A SQLite URL with a relative path made absolute (the job's process runs in another directory)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database and not os.path.isabs(parsed.database):
        parsed = parsed.set(database=os.path.abspath(parsed.database))
    return parsed.render_as_string(hide_password=False)


def compute(settings, job: Job, data: dict[str, Path], work: Path) -> JobResult:
    """compress.run for the job in a process of its own (workers.job_process), under the memory ceiling and the time
    limit; raises Cancelled, JobFailed, or whatever interrupts this worker (which then ends the process too)."""
    from compress.train import Cancelled

    # The child runs in the work directory: every path it gets is absolute (the embedded default's data dir, ./var,
    # is relative, and a relative path would then point inside the work directory).
    work = work.resolve()
    data = {role: Path(path).resolve() for role, path in data.items()}
    result_path = work / "result.json"
    result_path.unlink(missing_ok=True)
    request = {
        "job_id": job.id,
        "parent_pid": os.getpid(),
        "database_url": _absolute_database_url(settings.resolved_database_url),
        "recipe": job.recipe,
        "data": {role: str(path) for role, path in data.items()},
        "output_dir": str(work / "output"),
        "state_path": str(work / "training-state.pt"),
        "result_path": str(result_path),
        "memory_limit_bytes": settings.job_memory_limit_bytes,
    }
    child = subprocess.Popen([sys.executable, "-m", "workers.job_process"], stdin=subprocess.PIPE, cwd=work)
    try:
        child.stdin.write(json.dumps(request).encode())
        child.stdin.close()
        try:
            child.wait(timeout=settings.job_time_limit_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise JobFailed(
                "time_limit",
                f"the job ran past its time limit of {settings.job_time_limit_s:,} s (SPARSEQ_JOB_TIME_LIMIT_S) and "
                "was stopped; set training.time_budget_s to stop training in time and keep the result",
            ) from None
    finally:
        if child.poll() is None:  # this worker is being stopped: its job's process goes with it
            child.kill()
            child.wait()
    if not result_path.exists():
        if child.returncode == -signal.SIGKILL:
            raise JobFailed(
                "out_of_memory",
                "the job's process was killed, most likely by the kernel for lack of memory; ask for less: a smaller "
                "model or batch",
            )
        raise JobFailed("crashed", f"the job's process ended without a result (exit status {child.returncode})")
    outcome = json.loads(result_path.read_text())
    if outcome["status"] == "cancelled":
        raise Cancelled()
    if outcome["status"] == "failed":
        raise JobFailed(str(outcome["code"]), outcome["message"])
    return JobResult(outcome["metrics"], outcome["report"], [Path(p) for p in outcome["files"]])


def run_job(job_id: str, *, work_root: Path | None = None) -> str:
    """Run one job to a terminal state (or leave it running for redelivery if this process dies)."""
    from compress.train import Cancelled

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
    heartbeat = _Heartbeat(sessions, job_id)
    staged: list[Staged] = []
    replaced: set[str] = set()
    try:
        heartbeat.start()
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            data = _materialise(store, sessions, job, Path(scratch))
            result = compute(settings, job, data, work)
        fields = job_fields(result)
        for path in result.files:
            staged.append((path, *store.stage_file(path)))
        replaced = record_artifacts(sessions, store, job_id, job.owner, staged)
        _finish(sessions, job_id, status="succeeded", progress=1.0, **fields)
        outcome = "succeeded"
    except Cancelled:
        _finish(sessions, job_id, status="cancelled")
        outcome = "cancelled"
    except Exception as error:  # a user-facing message, the trace only in the worker's log
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        message = str(error) or type(error).__name__
        _finish(sessions, job_id, status="failed", error={"code": error_code(error), "message": message[:2000]})
        outcome = "failed"
    finally:
        heartbeat.stop()
        for _, temporary, _, _ in staged:  # placed by a commit, or left over by a failure before it
            temporary.unlink(missing_ok=True)
    _release_sweep(sessions, store, job_id)
    if replaced:  # the blobs of artifacts a redelivered run replaced (recorded, whatever became of the job then)
        _release_quietly(sessions, store, job_id, replaced)
    # Only a finished job loses its work directory: one interrupted by the worker's shutdown (a BaseException, which
    # passes through above) keeps its training state for the redelivery to resume from.
    shutil.rmtree(work, ignore_errors=True)
    return outcome


def _release_sweep(sessions, store: BlobStore, job_id: str) -> None:
    """A sweep's child ended: its sweep may start the next held combinations (the reconciler does it too), or be
    finished, and then gets its own artifacts (service.sweep_report; a failure there leaves the sweep as it is)."""
    from service import sweep_report
    from service.sweeps import release

    try:
        with session_scope(sessions) as session:
            sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
            started = release(session, sweep_id) if sweep_id else []
        for child in started:
            app.send_task(TASK_NAME, args=[child], queue=QUEUE)
    except Exception as error:
        log.warning("job %s: its sweep was not released (%s); the reconciler will", job_id, error)
        return
    if sweep_id and not started:
        sweep_report.publish_in(sessions, store, sweep_id)  # nothing for a running sweep; logs its own failures


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
