"""Garbage collection of the blob store and the workers' work directories (``sparseqd gc``).

What is collected, and why it can be there:
- blobs no live file and no artifact refers to: a database commit that failed after its blob was placed, or bytes kept
  by a crash between a deletion's commit and its release. Each is removed under its blob lock
  (:func:`service.files.release_blob`), so an upload of the same bytes that is under way is never robbed;
- staged temporary files older than ``temporary_age_s``: uploads cut off mid-stream by a killed process (a younger one
  may be an upload in progress);
- work directories of jobs that are finished or gone: a worker keeps an interrupted job's directory so that the
  redelivery resumes from its training state, and the directory outlives the job if it then ends elsewhere.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.files import release_blob
from service.storage import BlobStore
from service.tables import LIVE, Artifact, File, Job


@dataclass
class Collected:
    blobs: list[str] = field(default_factory=list)
    blob_bytes: int = 0
    temporaries: list[Path] = field(default_factory=list)
    work_dirs: list[Path] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)

    def describe(self, dry_run: bool) -> str:
        verb = "would remove" if dry_run else "removed"
        return (
            f"{verb} {len(self.blobs)} unreferenced blobs ({self.blob_bytes:,} bytes), "
            f"{len(self.temporaries)} stale temporary files, {len(self.work_dirs)} work directories of finished jobs"
            + (f", aborted {len(self.uploads)} unfinished multipart uploads" if self.uploads else "")
        )


def collect(
    sessions: sessionmaker[Session],
    store: BlobStore,
    work_root: Path | None,
    *,
    temporary_age_s: float = 24 * 3600,
    dry_run: bool = False,
) -> Collected:
    collected = Collected()
    with sessions() as session:
        referenced = set(session.scalars(select(File.sha256).where(File.deleted_at.is_(None))))
        referenced |= set(session.scalars(select(Artifact.sha256)))
    for sha, size in store.blobs():
        if sha in referenced:
            continue
        # A candidate, as read a moment ago: release_blob checks again under the blob's lock before removing it.
        if dry_run or release_blob(sessions, store, sha):
            collected.blobs.append(sha)
            collected.blob_bytes += size

    abort = getattr(store, "abort_stale_uploads", None)  # S3: multipart uploads a killed process left unfinished
    if abort is not None and not dry_run:
        collected.uploads = abort(temporary_age_s)
    cutoff = time.time() - temporary_age_s
    for path in sorted(store.staging.iterdir()):
        try:
            stale = path.is_file() and path.stat().st_mtime < cutoff
        except FileNotFoundError:  # an upload placed it meanwhile
            continue
        if stale:
            collected.temporaries.append(path)
            if not dry_run:
                path.unlink(missing_ok=True)

    if work_root is not None and work_root.is_dir():
        directories = {path.name: path for path in work_root.iterdir() if path.is_dir()}
        with sessions() as session:
            live = set(session.scalars(select(Job.id).where(Job.id.in_(list(directories)), Job.status.in_(LIVE))))
        for job_id, path in sorted(directories.items()):
            if job_id not in live:
                collected.work_dirs.append(path)
                if not dry_run:
                    shutil.rmtree(path, ignore_errors=True)
    return collected
