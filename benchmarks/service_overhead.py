"""What the service costs on top of the library: one small job run directly through ``compress.run`` and through the
API + Redis queue + Celery worker of ``sparseqd serve`` (started here as a subprocess), then the latency of
``GET /v1/jobs/{id}`` under concurrent clients.

  direct          compress.run(recipe, data) in this process (one torch thread, as the worker gets), after the same
                  tiny warm-up job as the worker's, so neither side pays for imports in the timed run
  service         POST /v1/jobs -> the client sees "succeeded" (polling every 50 ms): queue, worker, database writes
                  of progress/events/heartbeats, artifact storage included
  submit->start   POST /v1/jobs returned -> the client sees "running" (polling every 5 ms); the first job of a fresh
                  worker also pays for importing torch (printed separately, from a tiny warm-up job)
  GET latency     GET /v1/jobs/{id} from ``--clients`` concurrent closed-loop clients, idle worker: ``wrk`` for
                  ``--duration`` seconds (after a 3 s warm-up) when it is on PATH, else (or with ``--httpx``)
                  ``--requests`` from httpx.AsyncClient tasks in this process, which take a core themselves. The
                  clients run on the same cores as the server, so either is an upper bound; the generator is printed

Targets (printed, never asserted): service/direct <= 1.05 for a job of about a minute; GET p99 < 50 ms.

    .venv/bin/python benchmarks/service_overhead.py [--lines 6000] [--epochs 3] [--clients 50] [--duration 15]
        [--httpx [--requests 2000]] [--api-workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


def recipe(epochs: int) -> dict:
    return {
        "task": {"type": "language_model", "max_vocab": 2000},
        "model": {"cell": "lstm", "embedding_size": 64, "hidden_size": 128},
        "method": {"type": "predefined", "recurrent": {"components": 4, "input_density": 0.5}},
        "training": {"epochs": epochs, "batch_size": 20, "bptt": 35},
    }


def ptb_slices(lines: int, directory: Path) -> dict[str, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        import treebank
    paths = {"train": directory / "ptb.train.txt", "valid": directory / "ptb.valid.txt"}
    paths["train"].write_text("\n".join(treebank.penn["train"].splitlines()[:lines]) + "\n")
    paths["valid"].write_text("\n".join(treebank.penn["valid"].splitlines()[:300]) + "\n")
    return paths


def run_direct(spec: dict, data: dict[str, Path], directory: Path) -> float:
    import torch

    import compress
    from compress.spec import Recipe

    torch.set_num_threads(1)
    started = time.perf_counter()
    compress.run(Recipe.model_validate(spec), data, output_dir=directory / "direct")
    return time.perf_counter() - started


class Serve:
    def __init__(self, directory: Path, api_workers: int = 1) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEQ_")}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        script = Path(sys.executable).parent / "sparseqd"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
        command += ["serve", "--data-dir", str(directory / "data"), "--port", str(self.port)]
        command += ["--api-workers", str(api_workers)]
        self.log = open(directory / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.key = None
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.key and httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"sparseqd serve exited; see {directory / 'serve.log'}")
            time.sleep(0.2)
        raise SystemExit("sparseqd serve did not become ready")

    def _read(self) -> None:
        for line in self.process.stdout:
            found = re.search(r"\b(sk_[A-Za-z0-9_-]{20,})", line)
            if found:
                self.key = found.group(1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def wait_status(client: httpx.Client, job_id: str, statuses: tuple[str, ...], every: float) -> dict:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(every)


def run_service(client: httpx.Client, spec: dict, files: dict[str, str]) -> tuple[float, float, dict]:
    """(submit -> succeeded seconds, submit -> running seconds, the finished job)."""
    started = time.perf_counter()
    response = client.post("/v1/jobs", json={"recipe": spec, "files": files})
    response.raise_for_status()
    submitted = time.perf_counter()
    job_id = response.json()["id"]
    wait_status(client, job_id, ("running", *TERMINAL), 0.005)
    running = time.perf_counter()
    job = wait_status(client, job_id, TERMINAL, 0.05)
    finished = time.perf_counter()
    if job["status"] != "succeeded":
        raise SystemExit(f"the job ended {job['status']}: {job['error']}")
    return finished - started, running - submitted, job


async def httpx_latency(url: str, key: str, job_id: str, clients: int, requests: int) -> dict[str, float]:
    """The same summary as wrk_latency, from httpx.AsyncClient tasks in this process."""
    latencies: list[float] = []
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def one_client() -> None:
            for _ in remaining:
                started = time.perf_counter()
                response = await client.get(f"/v1/jobs/{job_id}")
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "requests": len(latencies),
        "rate": len(latencies) / wall,
    }


WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_latency(url: str, key: str, job_id: str, clients: int, duration: int, directory: Path) -> dict[str, float]:
    """p50, p99 (s), requests and requests/s of wrk's closed-loop clients (two threads, one connection each)."""
    script = directory / "auth.lua"
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    target = f"{url}/v1/jobs/{job_id}"
    base = ["wrk", "-t2", f"-c{clients}", "-s", str(script)]
    subprocess.run([*base, "-d3s", target], check=True, capture_output=True)  # warm-up: caches, connections
    out = subprocess.run([*base, f"-d{duration}s", "--latency", target], check=True, capture_output=True, text=True)
    if "Non-2xx" in out.stdout or "Socket errors" in out.stdout:
        raise SystemExit(f"wrk saw failed requests:\n{out.stdout}")

    def latency(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s|m)\s*$", out.stdout, re.M).groups()
        return float(value) * WRK_UNITS[unit]

    return {
        "p50": latency("50%"),
        "p99": latency("99%"),
        "requests": int(re.search(r"(\d+) requests in", out.stdout).group(1)),
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1)),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=6000, help="PTB training sentences")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=int, default=15, help="seconds of wrk load")
    parser.add_argument("--httpx", action="store_true", help="load from httpx in this process even if wrk is there")
    parser.add_argument("--requests", type=int, default=2000, help="requests of the httpx load")
    parser.add_argument("--api-workers", type=int, default=1, help="sparseqd serve --api-workers")
    args = parser.parse_args()
    generator = "httpx" if args.httpx or shutil.which("wrk") is None else "wrk"
    spec = recipe(args.epochs)

    with tempfile.TemporaryDirectory(prefix="sparseq-bench-") as name:
        directory = Path(name)
        data = ptb_slices(args.lines, directory)
        server = Serve(directory, args.api_workers)
        try:
            client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=60)
            files = {}
            for role, path in data.items():
                upload = client.post(
                    "/v1/files", files={"file": (path.name, path.read_bytes())}, data={"purpose": "lm_text"}
                )
                upload.raise_for_status()
                files[role] = upload.json()["id"]
            # A tiny warm-up job: the fresh worker imports torch and compress on its first job.
            warm = {**spec, "training": {**spec["training"], "epochs": 1, "time_budget_s": 0.5}}
            _, cold_start, _ = run_service(client, warm, files)

            run_direct(warm, data, directory)  # the same warm-up in this process: imports, first-call costs
            direct = run_direct(spec, data, directory)
            service, start_latency, job = run_service(client, spec, files)
            inside = job["finished_at"] - job["started_at"]

            if generator == "wrk":
                get = wrk_latency(server.url, server.key, job["id"], args.clients, args.duration, directory)
            else:
                get = asyncio.run(httpx_latency(server.url, server.key, job["id"], args.clients, args.requests))
        finally:
            server.stop()

    ratio = service / direct
    print(f"job: LM predefined k=4 on {args.lines} PTB sentences, {args.epochs} epochs, one torch thread")
    print(f"{'measure':<42}{'value':>12}  target")
    print(f"{'direct compress.run (s)':<42}{direct:>12.2f}")
    print(f"{'service submit -> succeeded (s)':<42}{service:>12.2f}")
    print(f"{'  of which started_at -> finished_at (s)':<42}{inside:>12d}  (whole seconds)")
    verdict = "PASS" if ratio <= 1.05 else "MISS"
    print(f"{'overhead ratio service / direct':<42}{ratio:>12.3f}  <= 1.05 {verdict}")
    print(f"{'submit -> running, warm worker (ms)':<42}{start_latency * 1000:>12.1f}")
    print(f"{'submit -> running, first job (ms)':<42}{cold_start * 1000:>12.1f}")
    workers = f"{args.api_workers} API process" + ("es" if args.api_workers > 1 else "")
    print(f"{'GET load generator':<42}{generator:>12}  ({workers})")
    print(f"{f'GET /v1/jobs/id p50, {args.clients} clients (ms)':<42}{get['p50'] * 1000:>12.1f}")
    verdict = "PASS" if get["p99"] < 0.050 else "MISS"
    label = f"GET /v1/jobs/id p99, {get['requests']} requests (ms)"
    print(f"{label:<42}{get['p99'] * 1000:>12.1f}  < 50 {verdict}")
    print(f"{'GET throughput (requests/s)':<42}{get['rate']:>12.0f}")


if __name__ == "__main__":
    main()
