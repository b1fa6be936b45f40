"""Files: stored content-addressed, validated for their purpose, owned by one key's owner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from compress import tasks
from service.db import session_scope
from service.errors import BadRequest, Conflict, NotFound
from service.pagination import page
from service.schemas import FileObject, unix
from service.storage import BlobStore
from service.tables import LIVE, Artifact, File, Job, utcnow

if TYPE_CHECKING:  # the streamed upload comes from the API (FastAPI); workers import this module without it
    from service.upload import Upload

MAX_LISTED_TENSORS = 4096  # names and shapes kept in a weights file's stats (for the check at job creation)


def render(file: File) -> FileObject:
    return FileObject(
        id=file.id,
        purpose=file.purpose,
        filename=file.filename,
        bytes=file.bytes,
        sha256=file.sha256,
        status=file.status,
        status_details=file.status_detail,
        stats=file.stats or {},
        created_at=unix(file.created_at),
    )


def validate_content(purpose: str, path) -> tuple[bool, str | None, dict]:
    if purpose == "weights":
        from compress.checkpoint import CheckpointError
        from compress.weights import describe_weights

        try:
            info = describe_weights(path)
        except (ValueError, CheckpointError) as error:
            return False, str(error).split(": ", 1)[-1], {}
        stats: dict = {"tensors": len(info.tensors)}
        if len(info.tensors) <= MAX_LISTED_TENSORS:
            stats["shapes"] = info.tensors
        if info.vocabulary is not None:
            stats["vocabulary_size"] = len(info.vocabulary)
        if info.tags is not None:
            stats["tags"] = len(info.tags)
        return True, None, stats
    if purpose == "vocabulary":
        from compress.weights import validate_vocabulary

        result = validate_vocabulary(path)
        return result.ok, (None if result.ok else result.describe()), result.stats
    result = tasks.purposes()[purpose].validate(path)
    if result.refused:  # not kept as a file in error: its bytes are not stored at all
        raise BadRequest(f"the file was refused: {result.describe()}", param="file", code="file_refused")
    return result.ok, (None if result.ok else result.describe()), result.stats


def create_file(session: Session, store: BlobStore, *, owner: str, upload: Upload) -> File:
    purpose = upload.fields.get("purpose")
    if purpose not in tasks.purposes():
        upload.temporary.unlink(missing_ok=True)
        raise BadRequest(f"purpose must be one of {list(tasks.purposes())}, got {purpose!r}", param="purpose")
    try:
        ok, detail, stats = validate_content(purpose, upload.temporary)  # before the lock: it can take seconds
        lock_blob(session, upload.sha256)
        store.commit(upload.temporary, upload.sha256)
    except BaseException:  # invalid beyond reading, a lock that timed out...: the staged bytes go with the request
        upload.temporary.unlink(missing_ok=True)
        raise
    file = File(
        owner=owner,
        purpose=purpose,
        filename=upload.filename,
        bytes=upload.size,
        sha256=upload.sha256,
        status="processed" if ok else "error",
        status_detail=detail,
        stats=stats,
    )
    session.add(file)
    session.flush()
    return file


def get_file(session: Session, *, owner: str, file_id: str) -> File:
    file = session.get(File, file_id)
    if file is None or file.owner != owner or file.deleted_at is not None:
        raise NotFound(f"no file {file_id!r}", param="file_id")
    return file


def files_in_use(session: Session, owner: str) -> dict[str, str]:
    """file id -> id of a live job using it."""
    used = {}
    for job in session.scalars(select(Job).where(Job.owner == owner, Job.status.in_(LIVE))):
        for file_id in [*job.files.values(), job.recipe.get("init_from")]:
            if file_id:
                used[file_id] = job.id
    return used


def lock_files(session: Session, file_ids) -> None:
    """Serialise this transaction with every other one that locks any of these files, until it ends.

    A job's creation checks its files and then commits; a file's deletion checks for live jobs and then commits. Run
    side by side, each could pass its check before the other committed: a queued job pointing at a deleted file. Both
    lock the files first, with an UPDATE that changes nothing: PostgreSQL then holds the rows' locks to the end of the
    transaction, and SQLite (no row locks) its database write lock, so the later reads see the other side committed.
    """
    ids = sorted({file_id for file_id in file_ids if file_id})
    if ids:
        _touch_files(session, File.id.in_(ids))


def _touch_files(session: Session, where) -> None:
    """An UPDATE of the matching file rows that changes nothing: it takes their row locks on PostgreSQL and, even
    where no row matches, the database write lock on SQLite; both are held until the transaction ends."""
    statement = update(File).where(where).values(purpose=File.purpose)
    session.execute(statement.execution_options(synchronize_session=False))


def delete_file(session: Session, *, owner: str, file_id: str) -> str:
    """Mark the file deleted; returns its blob's sha256 for :func:`release_blob`, which must run after the commit."""
    lock_files(session, [file_id])
    file = get_file(session, owner=owner, file_id=file_id)
    job = files_in_use(session, owner).get(file_id)
    if job is not None:
        raise Conflict(f"file {file_id} is used by {job}, which has not finished", param="file_id", code="file_in_use")
    file.deleted_at = utcnow()
    return file.sha256


def lock_blob(session: Session, sha256: str) -> None:
    """Serialise this transaction with every other one that locks this blob, until it ends.

    The store is shared by content: an upload (or a job's artifact) of the same bytes as a file being deleted reuses
    its blob. Unlocked, the deletion could find no reference, the upload then commit its row on the existing blob, and
    the deletion remove the bytes under it. Whoever places a blob and records its reference, and whoever checks the
    references and removes it, hold this lock throughout: PostgreSQL an advisory lock on the digest, SQLite its
    database write lock (taken by an UPDATE that changes nothing, as :func:`lock_files` takes it).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(sha256[:15], 16)})
    else:
        _touch_files(session, File.sha256 == sha256)


def release_blob(sessions: sessionmaker[Session], store: BlobStore, sha256: str) -> bool:
    """Delete a blob that no live file and no artifact refers to any more, as committed; True if it was deleted.

    Run after the deletion committed, never inside it: a commit that fails then leaves the file and its bytes.
    """
    with session_scope(sessions) as session:
        lock_blob(session, sha256)
        still_used = session.scalar(select(File.id).where(File.sha256 == sha256, File.deleted_at.is_(None)))
        artifact = session.scalar(select(Artifact.id).where(Artifact.sha256 == sha256))
        if still_used is not None or artifact is not None:
            return False
        store.delete(sha256)
        return True


def list_files(session: Session, *, owner: str, purpose: str | None, after: str | None, limit: int):
    query = select(File).where(File.owner == owner, File.deleted_at.is_(None))
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    return page(session, query, File, owner=owner, after=after, limit=limit, render=render)
