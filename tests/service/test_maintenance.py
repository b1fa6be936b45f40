"""``sparseqd gc``: what is unreferenced, stale or finished goes; what anything still uses stays."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from service.db import session_scope
from service.files import delete_file
from service.maintenance import collect
from service.storage import BlobStore
from service.tables import Artifact, Job
from tests.helpers.api import upload_ok

RECIPE = {"task": {"type": "adding"}}


def add_job(sessions, status: str) -> str:
    with session_scope(sessions) as session:
        job = Job(owner="alice", status=status, recipe=RECIPE, files={}, metrics={})
        session.add(job)
        session.flush()
        return job.id


@pytest.mark.databases
def test_only_blobs_nothing_refers_to_are_removed(client, alice, sessions, store, lm_bytes, tmp_path):
    listed = upload_ok(client, alice, lm_bytes)
    deleted = upload_ok(client, alice, b"deleted, and its release never ran\n")
    with session_scope(sessions) as session:
        delete_file(session, owner="alice", file_id=deleted["id"])
    orphan, orphan_size = store.put_chunks([b"placed, then its row's commit failed"])
    artifact_sha, _ = store.put_chunks([b"a job's checkpoint"])
    job_id = add_job(sessions, "succeeded")
    with session_scope(sessions) as session:
        session.add(Artifact(job_id=job_id, owner="alice", kind="file", filename="m", bytes=1, sha256=artifact_sha))

    preview = collect(sessions, store, None, dry_run=True)
    assert sorted(preview.blobs) == sorted([deleted["sha256"], orphan])
    assert preview.blob_bytes == deleted["bytes"] + orphan_size
    assert store.exists(deleted["sha256"]) and store.exists(orphan)  # a dry run removes nothing

    stray = store.root / orphan[:2] / ".nfs0000000000abcdef00000001"  # what NFS leaves for a file open elsewhere
    stray.write_bytes(b"not a blob")
    collected = collect(sessions, store, None)
    assert sorted(collected.blobs) == sorted(preview.blobs)
    assert stray.exists()
    assert not store.exists(deleted["sha256"]) and not store.exists(orphan)
    assert store.exists(listed["sha256"]) and store.exists(artifact_sha)
    assert client.get(f"/v1/files/{listed['id']}/content", headers=alice).content == lm_bytes
    assert collect(sessions, store, None).blobs == []


def test_only_stale_temporaries_are_removed(sessions, store):
    fresh = store.root / "tmp" / "an-upload-in-flight"
    stale = store.root / "tmp" / "cut-off-yesterday"
    for path in (fresh, stale):
        path.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))

    collected = collect(sessions, store, None)
    assert collected.temporaries == [stale]
    assert fresh.exists() and not stale.exists()


def test_only_work_directories_of_finished_or_unknown_jobs_are_removed(sessions, store, tmp_path):
    work = tmp_path / "work"
    jobs = {status: add_job(sessions, status) for status in ("queued", "running", "cancelling", "succeeded", "failed")}
    for job_id in [*jobs.values(), "job_gone"]:
        (work / job_id).mkdir(parents=True)
        (work / job_id / "training-state.pt").write_bytes(b"state")

    collected = collect(sessions, store, work)
    removed = {path.name for path in collected.work_dirs}
    assert removed == {jobs["succeeded"], jobs["failed"], "job_gone"}
    assert {path.name for path in work.iterdir()} == {jobs["queued"], jobs["running"], jobs["cancelling"]}


def test_the_command_reports_what_it_removed(tmp_path):
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "service.cli", "gc", "--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEQ_")}
    unmigrated = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert unmigrated.returncode == 1 and "run sparseqd migrate first" in unmigrated.stderr  # gc never migrates
    assert "Traceback" not in unmigrated.stderr
    assert not (data_dir / "sparseq.db").exists()  # nor leaves an empty database behind
    migrate = [sys.executable, "-m", "service.cli", "migrate", "--data-dir", str(data_dir)]
    subprocess.run(migrate, capture_output=True, env=env, timeout=120, check=True)

    with sqlite3.connect(data_dir / "sparseq.db") as database:  # as if newer code had migrated it
        head = database.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        database.execute("UPDATE alembic_version SET version_num = '9999'")
    newer = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert newer.returncode == 1 and "newer than this code" in newer.stderr
    with sqlite3.connect(data_dir / "sparseq.db") as database:  # as if this code had not migrated it yet
        database.execute("UPDATE alembic_version SET version_num = '0001'")
    older = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert older.returncode == 1 and f"at revision 0001, not {head}: run sparseqd migrate" in older.stderr
    with sqlite3.connect(data_dir / "sparseq.db") as database:
        database.execute("UPDATE alembic_version SET version_num = ?", (head,))
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=True)
    assert first.stdout.startswith("removed 0 unreferenced blobs (0 bytes)")

    sha, size = BlobStore(data_dir / "blobs").put_chunks([b"nothing refers to this"])
    preview = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert preview.stdout.startswith(f"would remove 1 unreferenced blobs ({size:,} bytes)")
    assert BlobStore(data_dir / "blobs").exists(sha)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=True)
    assert done.stdout.startswith(f"removed 1 unreferenced blobs ({size:,} bytes)")
    assert not BlobStore(data_dir / "blobs").exists(sha)
