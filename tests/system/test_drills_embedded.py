"""Fault drills on ``sparseqd serve`` (the embedded mode): its worker SIGKILLed while a job is ``cancelling``, and
its worker killed twice in a row (restarted with back-off, visible in the log and in /readyz) while a ``sparseqd
worker --data-dir D`` that joined its broker runs the job submitted meanwhile. Short intervals
(SPARSEQ_STALE_AFTER_S=3, SPARSEQ_RECONCILE_AFTER_S=2) keep each drill to seconds. Each prints its counts."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest

from tests.helpers.processes import Process, Server, alive, navigation_recipe, process_env, sparseqd

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TINY = {
    "task": {"type": "adding", "sequence_length": 5, "steps_per_epoch": 2},
    "model": {"cell": "rnn_relu", "hidden_size": 4},
    "method": {"type": "dense"},
    "training": {"epochs": 1, "batch_size": 4},
}
INTERVALS = {"SPARSEQ_RECONCILE_AFTER_S": "2", "SPARSEQ_STALE_AFTER_S": "3"}
RESTART_LINE = re.compile(r"sparseqd: the worker \(pid (\d+)\) exited with code (-?\d+); restart (\d+) in (\S+) s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("embedded") / "data"
    server = Server(data_dir, env=process_env(data_dir, **INTERVALS))
    try:
        yield server.start()
    finally:
        server.close()


def readyz(server: Server) -> dict:
    return httpx.get(f"{server.url}/readyz", timeout=5).json()


def running_worker(server: Server, timeout: float = 60) -> dict:
    """The supervised worker once it runs and has connected (its Celery banner says ready)."""
    deadline = time.monotonic() + timeout
    while True:
        worker = readyz(server).get("worker", {})
        if worker.get("state") == "running" and alive(worker["pid"]):
            return worker
        assert time.monotonic() < deadline, f"no running worker after {timeout} s: {worker}"
        time.sleep(0.1)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def log_of(server: Server) -> str:
    return server.log_path.read_text(errors="replace")


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


def test_a_worker_killed_while_its_job_is_cancelling_leaves_the_job_cancelled(server, capsys):
    api = server.client()
    worker = running_worker(server)
    job = api.submit(navigation_recipe(steps_per_epoch=2000, epochs=1))  # a minute of work: still running below
    api.wait(job["id"], timeout=60, until=lambda j: j["status"] == "running" and j["progress"] > 0)
    os.kill(worker["pid"], signal.SIGSTOP)  # it cannot see the cancel, nor beat its heartbeat any more
    cancelling = api.http.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelling["status"] == "cancelling"
    kill(worker["pid"])
    killed_at = time.monotonic()

    done = api.wait(job["id"], timeout=60)
    took = time.monotonic() - killed_at
    messages = [e["message"] for e in api.events(job["id"])]
    report(
        capsys,
        f"drill cancelling-worker-killed: jobs=1 faults=1 SIGKILL while cancelling, ended {done['status']} "
        f"{took:.1f} s after the kill (stale after 3 s), lost=0 duplicated={max(0, messages.count('job started') - 1)}",
    )
    assert done["status"] == "cancelled" and done["finished_at"] is not None, done
    assert "job succeeded" not in messages and messages.count("job started") == 1
    assert any("its worker stopped before finishing the cancel" in m for m in messages), messages


def started(worker: Process, timeout: float = 60) -> str:
    """The worker's log once its Celery banner says it is ready."""
    deadline = time.monotonic() + timeout
    while "ready." not in (log := worker.log_path.read_text(errors="replace")):
        assert time.monotonic() < deadline and worker.popen.poll() is None, worker.output()
        time.sleep(0.2)
    return log


def test_a_dead_embedded_worker_is_restarted_with_back_off_and_a_worker_on_its_data_dir_joins(server, tmp_path, capsys):
    api = server.client()
    env = process_env(server.data_dir, **INTERVALS)  # no broker URL: only the data dir
    assert "SPARSEQ_BROKER_URL" not in env
    joined = Process([*sparseqd(), "worker", "--data-dir", str(server.data_dir)], env, tmp_path / "w.log", tmp_path)
    try:
        socket = (server.data_dir / "redis.sock").resolve()
        assert f"Connected to redis+socket://{socket}" in started(joined)
        first = running_worker(server)
        restarts = first["restarts"]
        kill(first["pid"])
        # Submitted while the supervised worker is dead: the joined worker is the only one to take it.
        job = api.submit(TINY)
        deadline = time.monotonic() + 5
        while (restarting := readyz(server))["worker"]["state"] == "running":
            assert time.monotonic() < deadline, restarting
            time.sleep(0.05)
        assert restarting["status"] == "ready"  # the API still takes jobs
        assert restarting["worker"]["restarts"] == restarts + 1 and restarting["worker"]["last_exit_code"] == -9

        second = running_worker(server)
        assert second["pid"] != first["pid"]
        kill(second["pid"])  # dies again at once: the next restart waits twice as long
        by_joined = api.wait(job["id"], timeout=60)
        assert re.search(r"Task sparseq\.run_job\[[^]]+\] succeeded", joined.log_path.read_text()), joined.output()
    finally:
        joined.close()
    third = running_worker(server)
    by_restarted = api.wait(api.submit(TINY)["id"], timeout=60)  # the joined worker is gone: the third one runs it

    lines = RESTART_LINE.findall(log_of(server))
    ours = [(int(pid), int(code), int(n), float(delay)) for pid, code, n, delay in lines][-2:]
    jobs = [by_joined, by_restarted]
    report(
        capsys,
        f"drill embedded-worker-killed: jobs={len(jobs)} faults=2 SIGKILLs of the worker, "
        f"restarts={third['restarts'] - restarts} delays={[delay for *_, delay in ours]} s, "
        f"lost={sum(j['status'] != 'succeeded' for j in jobs)} duplicated={sum(j['attempts'] - 1 for j in jobs)}",
    )
    assert ours[0][:3] == (first["pid"], -9, restarts + 1) and ours[1][:3] == (second["pid"], -9, restarts + 2)
    assert ours[1][3] == 2 * ours[0][3]  # back-off
    assert third["restarts"] == restarts + 2 and third["pid"] not in (first["pid"], second["pid"])
    assert [(j["status"], j["attempts"]) for j in jobs] == [("succeeded", 1), ("succeeded", 1)]
