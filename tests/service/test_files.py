"""POST/GET/DELETE /v1/files: streamed, size-limited, content-addressed uploads validated for their purpose."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import service.files as file_service
import service.jobs as job_service
from service.db import session_scope
from service.errors import Conflict
from service.files import delete_file
from service.tables import Artifact, File, Job
from tests.helpers.api import (
    LIMIT,
    chunked,
    create_job_ok,
    error,
    multipart,
    trajectories_npz,
    upload,
    upload_ok,
)

PURPOSE_LIST = "['lm_text', 'tagging_conll', 'trajectories', 'weights', 'vocabulary']"


def pickled_npz() -> bytes:
    """An archive whose 'velocity' is an object array: reading it would need pickle, which must stay refused."""
    buffer = io.BytesIO()
    np.savez(buffer, velocity=np.array([{"a": 1}], dtype=object), position=np.zeros((1, 2, 2)), start=np.zeros((1, 2)))
    return buffer.getvalue()


def blob_files(store) -> list:
    """Everything in the blob store outside its tmp/ directory."""
    return [p for p in store.root.rglob("*") if p.is_file() and p.parent.name != "tmp"]


def leftovers(store) -> list:
    return list((store.root / "tmp").iterdir())


# -- upload and validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", ["lm_text", "tagging_conll", "trajectories", "weights"])
@pytest.mark.databases
def test_upload_each_purpose_is_processed_with_the_sha256_of_its_bytes(
    purpose, client, alice, store, lm_bytes, conll_bytes, npz_bytes, weights_bytes
):
    content = {"lm_text": lm_bytes, "tagging_conll": conll_bytes, "trajectories": npz_bytes, "weights": weights_bytes}
    data = content[purpose]
    response = upload(client, alice, data, purpose=purpose, filename=f"upload.{purpose}")

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["object"] == "file"
    assert body["id"].startswith("file_")
    assert body["purpose"] == purpose
    assert body["filename"] == f"upload.{purpose}"
    assert body["bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["status"] == "processed"
    assert body["status_details"] is None
    assert store.path(body["sha256"]).read_bytes() == data
    assert leftovers(store) == []


def test_the_upload_is_committed_before_its_response_starts(app, alice, lm_bytes, sessions):
    """A client that got 201 can use the file in its very next request: the request's session commits when the
    handler returns, not after the response has been sent."""
    committed_when_answered = []

    async def watched(scope, receive, send):
        async def watching(message):
            if message["type"] == "http.response.start":
                with sessions() as session:  # another connection: sees only what was committed
                    committed_when_answered.append(session.scalar(select(func.count()).select_from(File)))
            await send(message)

        await app(scope, receive, watching)

    async def upload() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=watched), base_url="http://sparseq") as http:
            files = {"file": ("ptb.train.txt", lm_bytes)}
            return await http.post("/v1/files", headers=alice, files=files, data={"purpose": "lm_text"})

    response = asyncio.run(upload())
    assert response.status_code == 201, response.text
    assert committed_when_answered == [1]


def test_a_slow_validation_does_not_hold_up_other_requests(app, alice, lm_bytes, monkeypatch):
    """Validating a large upload takes seconds; meanwhile the same process keeps answering (it used to run on the
    event loop, so every other request of the process waited for it)."""
    validate = file_service.validate_content

    def slow_validate(*args):
        time.sleep(1.0)
        return validate(*args)

    monkeypatch.setattr(file_service, "validate_content", slow_validate)
    finished: list[str] = []

    async def both() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sparseq") as http:

            async def upload() -> None:
                files = {"file": ("ptb.train.txt", lm_bytes)}
                response = await http.post("/v1/files", headers=alice, files=files, data={"purpose": "lm_text"})
                assert response.status_code == 201, response.text
                finished.append("upload")

            async def health() -> None:
                await asyncio.sleep(0.2)  # the upload is being validated by now
                assert (await http.get("/healthz")).status_code == 200
                finished.append("healthz")

            await asyncio.gather(upload(), health())

    asyncio.run(both())
    assert finished == ["healthz", "upload"]


def test_upload_stats_count_what_was_read(client, alice, lm_bytes, conll_bytes, npz_bytes, weights_bytes):
    text = lm_bytes.decode()
    lm = upload_ok(client, alice, lm_bytes)
    assert lm["stats"] == {
        "sentences": sum(1 for line in text.splitlines() if line.split()),
        "tokens": len(text.split()),
    }
    pairs = [line.split("\t") for line in conll_bytes.decode().splitlines() if line.strip()]
    conll = upload_ok(client, alice, conll_bytes, purpose="tagging_conll")
    assert conll["stats"] == {
        "sentences": 30,  # tagging_corpus(30, ...)
        "tokens": len(pairs),
        "tags": len({tag for _, tag in pairs}),
    }
    trajectories = upload_ok(client, alice, npz_bytes, purpose="trajectories")
    assert trajectories["stats"] == {"trajectories": 3, "steps": 6}
    weights = upload_ok(client, alice, weights_bytes, purpose="weights")
    assert weights["stats"] == {"tensors": 2, "shapes": {"decoder.bias": [5], "rnn.weight_hh_l0": [8, 2]}}


@pytest.mark.parametrize(
    ("purpose", "content", "details"),
    [
        ("lm_text", b"the first line is fine\nthen \xff\xfe is not utf-8\nthird\n", "line 2: not valid UTF-8 (byte 6"),
        ("lm_text", b"one\ntwo\nthree \x00 four\n", "line 3: contains a NUL byte"),
        ("lm_text", b"\n   \n", "the file has no tokens"),
        ("tagging_conll", b"the\tDT\ncat\tNN\n\nsat VBD\n", "line 4: expected 'token<TAB>tag', found 1"),
        ("trajectories", trajectories_npz(escape=True), "array 'position': leaves the box"),
        ("trajectories", b"PK not really a zip", "not a readable .npz archive"),
        ("trajectories", pickled_npz(), "array 'velocity': cannot be read without pickle"),
        ("weights", b"this is not a safetensors file", "not a readable safetensors file"),
    ],
)
@pytest.mark.databases
def test_a_bad_file_is_stored_with_status_error_naming_the_first_bad_line(purpose, content, details, client, alice):
    response = upload(client, alice, content, purpose=purpose)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["status_details"].startswith(details), body["status_details"]
    assert body["sha256"] == hashlib.sha256(content).hexdigest()


def test_the_filename_keeps_only_its_last_component(client, alice, lm_bytes):
    body = upload_ok(client, alice, lm_bytes, filename="../../etc/passwd")
    assert body["filename"] == "passwd"


def test_a_unicode_filename_round_trips(client, alice, lm_bytes):
    assert upload_ok(client, alice, lm_bytes, filename="données-été.txt")["filename"] == "données-été.txt"


def test_the_file_part_may_come_before_the_purpose(client, alice, lm_bytes):
    body, content_type = multipart([("file", "ptb.txt", lm_bytes), ("purpose", None, b"lm_text")])
    response = client.post("/v1/files", headers={**alice, "Content-Type": content_type}, content=body)
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(lm_bytes).hexdigest()


# -- size limit ---------------------------------------------------------------------------------------------------


def test_upload_exactly_at_the_limit_is_accepted(client, alice, store):
    data = (b"word " * (LIMIT // 5 + 1))[: LIMIT - 1] + b"\n"
    assert len(data) == LIMIT
    body = upload_ok(client, alice, data)
    assert body["bytes"] == LIMIT
    assert body["sha256"] == hashlib.sha256(data).hexdigest()


def test_upload_declared_too_large_by_content_length_is_413_before_reading(client, alice, store):
    data = b"x" * (LIMIT + 128 * 1024)
    response = upload(client, alice, data)

    assert response.status_code == 413
    declared = int(response.request.headers["content-length"])
    assert response.json() == error(
        "payload_too_large", f"the upload is {declared:,} bytes; the limit is {LIMIT:,}", "file"
    )
    assert leftovers(store) == []
    assert blob_files(store) == []
    assert client.get("/v1/files", headers=alice).json()["data"] == []


def test_upload_one_byte_over_the_limit_is_413_while_streaming(client, alice, store):
    # Content-Length is within the allowance for form overhead, so only the streaming count can catch it.
    response = upload(client, alice, b"a" * (LIMIT + 1))

    assert response.status_code == 413
    assert response.json() == error("payload_too_large", f"the upload passed the limit of {LIMIT:,} bytes", "file")
    assert leftovers(store) == []
    assert blob_files(store) == []


@pytest.mark.databases
def test_chunked_upload_without_content_length_is_413_and_leaves_nothing(client, alice, store):
    body, content_type = multipart([("purpose", None, b"lm_text"), ("file", "big.txt", b"word\n" * (LIMIT // 4))])
    response = client.post("/v1/files", headers={**alice, "Content-Type": content_type}, content=chunked(body))

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert response.json() == error("payload_too_large", f"the upload passed the limit of {LIMIT:,} bytes", "file")
    assert leftovers(store) == []
    assert blob_files(store) == []
    assert client.get("/v1/files", headers=alice).json()["data"] == []


def test_chunked_upload_within_the_limit_is_stored(client, alice, store, lm_bytes):
    body, content_type = multipart([("purpose", None, b"lm_text"), ("file", "ptb.txt", lm_bytes)])
    response = client.post("/v1/files", headers={**alice, "Content-Type": content_type}, content=chunked(body, 1000))

    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(lm_bytes).hexdigest()
    assert response.json()["filename"] == "ptb.txt"
    assert leftovers(store) == []


# -- malformed requests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("purpose", "shown"), [("images", "'images'"), (None, "None")])
def test_bad_or_missing_purpose_is_400_and_leaves_nothing(purpose, shown, client, alice, store, lm_bytes):
    data = {"purpose": purpose} if purpose is not None else {}
    response = client.post("/v1/files", headers=alice, files={"file": ("a.txt", lm_bytes)}, data=data)

    assert response.status_code == 400
    assert response.json() == error("bad_request", f"purpose must be one of {PURPOSE_LIST}, got {shown}", "purpose")
    assert leftovers(store) == []
    assert blob_files(store) == []


def test_form_without_a_file_part_is_400(client, alice, store):
    body, content_type = multipart([("purpose", None, b"lm_text")])
    response = client.post("/v1/files", headers={**alice, "Content-Type": content_type}, content=body)

    assert response.status_code == 400
    assert response.json() == error("bad_request", "the form has no 'file' part", "file")
    assert leftovers(store) == []


def test_form_with_two_file_parts_is_400(client, alice, store):
    body, content_type = multipart(
        [("purpose", None, b"lm_text"), ("file", "a.txt", b"one\n"), ("file", "b.txt", b"two\n")]
    )
    response = client.post("/v1/files", headers={**alice, "Content-Type": content_type}, content=body)

    assert response.status_code == 400
    assert response.json() == error("bad_request", "send exactly one 'file' part", "file")
    assert leftovers(store) == []
    assert blob_files(store) == []


def test_an_oversized_form_field_is_400(client, alice, store):
    body, content_type = multipart([("purpose", None, b"x" * 5000), ("file", "a.txt", b"one two\n")])
    response = client.post("/v1/files", headers={**alice, "Content-Type": content_type}, content=body)

    assert response.status_code == 400
    assert response.json() == error("bad_request", "form field 'purpose' is too long", "purpose")
    assert leftovers(store) == []


def test_a_malformed_multipart_body_is_400_and_leaves_nothing(client, alice, store):
    body = b"--XX\r\ngarbage\r\n\r\n"
    headers = {**alice, "Content-Type": "multipart/form-data; boundary=XX"}
    response = client.post("/v1/files", headers=headers, content=body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert response.json()["error"]["message"].startswith("malformed multipart body (")
    assert leftovers(store) == []
    assert blob_files(store) == []


def test_a_body_cut_before_the_closing_boundary_is_refused(client, alice, store):
    body, content_type = multipart(
        [("purpose", None, b"lm_text"), ("file", "a.txt", b"the whole sentence\nand more\n")]
    )
    truncated = body[: -len(b"more\n\r\n--sparseq-test-boundary--\r\n")]
    response = client.post("/v1/files", headers={**alice, "Content-Type": content_type}, content=truncated)

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "bad_request"
    assert client.get("/v1/files", headers=alice).json()["data"] == []
    assert leftovers(store) == []


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "application/json"}, {"Content-Type": "multipart/form-data"}, {}],
    ids=["json", "multipart-without-boundary", "no-content-type"],
)
def test_a_body_that_is_not_multipart_is_400(headers, client, alice, store):
    response = client.post("/v1/files", headers={**alice, **headers}, content=b'{"purpose": "lm_text"}')

    assert response.status_code == 400
    assert response.json() == error(
        "bad_request", "send the file as multipart/form-data with a 'file' part and a 'purpose' field", None
    )
    assert leftovers(store) == []


# -- list, get, content, delete -----------------------------------------------------------------------------------


@pytest.mark.databases
def test_list_pages_newest_first_without_duplicates_or_gaps(client, alice, bob):
    created = [upload_ok(client, alice, f"file number {i}\n".encode())["id"] for i in range(5)]
    upload_ok(client, bob, b"bob's file\n")
    newest_first = created[::-1]

    pages, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        response = client.get("/v1/files", headers=alice, params=params)
        assert response.status_code == 200
        page = response.json()
        assert page["object"] == "list"
        ids = [f["id"] for f in page["data"]]
        assert page["first_id"] == ids[0]
        assert page["last_id"] == ids[-1]
        pages.append((ids, page["has_more"]))
        if not page["has_more"]:
            break
        after = page["last_id"]

    assert pages == [(newest_first[0:2], True), (newest_first[2:4], True), (newest_first[4:5], False)]


def test_list_filters_by_purpose_and_an_empty_list_has_no_ids(client, alice, lm_bytes, npz_bytes):
    text = upload_ok(client, alice, lm_bytes)
    upload_ok(client, alice, npz_bytes, purpose="trajectories")

    only_text = client.get("/v1/files", headers=alice, params={"purpose": "lm_text"}).json()
    assert [f["id"] for f in only_text["data"]] == [text["id"]]
    empty = client.get("/v1/files", headers=alice, params={"purpose": "weights"}).json()
    assert empty == {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}


@pytest.mark.parametrize(
    ("params", "status", "body"),
    [
        ({"limit": 0}, 422, error("invalid_request", "Input should be greater than or equal to 1", "limit")),
        ({"limit": 101}, 422, error("invalid_request", "Input should be less than or equal to 100", "limit")),
        ({"after": "file_" + "0" * 24}, 404, error("not_found", f"no object 'file_{'0' * 24}' to page after", "after")),
    ],
)
def test_list_rejects_bad_paging_parameters(params, status, body, client, alice):
    response = client.get("/v1/files", headers=alice, params=params)
    assert response.status_code == status
    assert response.json() == body


def test_another_owners_id_as_cursor_is_treated_as_unknown(client, alice, bob):
    upload_ok(client, alice, b"alice\n")
    secret = upload_ok(client, bob, b"bob\n")["id"]

    response = client.get("/v1/files", headers=alice, params={"after": secret})
    assert response.status_code == 404
    assert response.json() == error("not_found", f"no object {secret!r} to page after", "after")


def test_get_one_returns_the_uploaded_object(client, alice, lm_bytes):
    created = upload_ok(client, alice, lm_bytes)
    response = client.get(f"/v1/files/{created['id']}", headers=alice)
    assert response.status_code == 200
    assert response.json() == created


def test_content_returns_the_uploaded_bytes_with_their_digest(client, alice, npz_bytes):
    created = upload_ok(client, alice, npz_bytes, purpose="trajectories", filename="paths.npz")
    response = client.get(f"/v1/files/{created['id']}/content", headers=alice)

    assert response.status_code == 200
    assert response.content == npz_bytes
    assert response.headers["x-content-sha256"] == hashlib.sha256(npz_bytes).hexdigest()
    assert 'filename="paths.npz"' in response.headers["content-disposition"]


@pytest.mark.databases
def test_delete_then_everything_is_404_and_the_blob_is_gone(client, alice, store, lm_bytes):
    created = upload_ok(client, alice, lm_bytes)
    file_id = created["id"]

    response = client.delete(f"/v1/files/{file_id}", headers=alice)
    assert response.status_code == 200
    assert response.json() == {"id": file_id, "object": "file", "deleted": True}

    gone = error("not_found", f"no file {file_id!r}", "file_id")
    for method, path in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
        response = client.request(method, f"/v1/files/{file_id}{path}", headers=alice)
        assert response.status_code == 404, (method, path)
        assert response.json() == gone
    assert client.get("/v1/files", headers=alice).json()["data"] == []
    assert not store.path(created["sha256"]).exists()


def test_a_delete_whose_commit_fails_keeps_the_file_and_its_bytes(app, alice, store, lm_bytes, monkeypatch):
    """The bytes go only after the deletion committed: before, they were removed inside the transaction, so a failed
    commit (SQLite's 'database is locked', say) left a listed file whose content was gone."""
    import service.deps

    with TestClient(app, raise_server_exceptions=False) as client:
        created = upload_ok(client, alice, lm_bytes)

        def failing_commit(session) -> None:
            service.deps.rollback_and_close(session)
            raise RuntimeError("database is locked")

        monkeypatch.setattr(service.deps, "commit_and_close", failing_commit)
        assert client.delete(f"/v1/files/{created['id']}", headers=alice).status_code == 500
        monkeypatch.undo()
        response = client.get(f"/v1/files/{created['id']}/content", headers=alice)
    assert response.status_code == 200
    assert response.content == lm_bytes


def test_deleting_one_of_two_identical_uploads_keeps_the_shared_blob(client, alice, bob, store, lm_bytes):
    first = upload_ok(client, alice, lm_bytes)
    second = upload_ok(client, bob, lm_bytes)
    assert first["sha256"] == second["sha256"]

    assert leftovers(store) == []
    assert len(blob_files(store)) == 1
    assert client.delete(f"/v1/files/{first['id']}", headers=alice).status_code == 200
    response = client.get(f"/v1/files/{second['id']}/content", headers=bob)
    assert response.status_code == 200
    assert response.content == lm_bytes


@pytest.mark.databases
def test_delete_is_refused_while_a_queued_job_uses_the_file(client, alice, train_file):
    file_id = train_file["id"]
    job = create_job_ok(client, alice, file_id)

    response = client.delete(f"/v1/files/{file_id}", headers=alice)
    assert response.status_code == 409
    assert response.json() == error(
        "file_in_use", f"file {file_id} is used by {job['id']}, which has not finished", "file_id"
    )
    assert client.get(f"/v1/files/{file_id}", headers=alice).status_code == 200

    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice).json()["status"] == "cancelled"
    assert client.delete(f"/v1/files/{file_id}", headers=alice).status_code == 200


@pytest.mark.databases
def test_a_delete_during_a_job_creation_waits_for_it_and_is_refused(
    client, alice, train_file, sessions, store, monkeypatch
):
    """The worst interleaving: a delete arrives after the job's file checks passed and before its commit. It must wait
    for the job and refuse (409), not leave a queued job whose file is gone (before the fix it deleted at once)."""
    file_id = train_file["id"]
    outcome: dict[str, object] = {}

    def delete_meanwhile() -> None:
        try:
            with session_scope(sessions) as session:
                delete_file(session, owner="alice", file_id=file_id)
            outcome["deleted"] = True
        except Conflict as refused:
            outcome["refused"] = refused.message

    checks = job_service._check_files

    def checks_then_a_delete(*args) -> None:
        checks(*args)
        outcome["thread"] = thread = threading.Thread(target=delete_meanwhile)
        thread.start()
        thread.join(timeout=1.0)  # an unlocked delete commits well within this

    monkeypatch.setattr(job_service, "_check_files", checks_then_a_delete)
    job = create_job_ok(client, alice, file_id)
    outcome["thread"].join(timeout=30)
    assert "deleted" not in outcome
    assert outcome["refused"] == f"file {file_id} is used by {job['id']}, which has not finished"
    assert client.get(f"/v1/files/{file_id}", headers=alice).status_code == 200
    assert store.path(train_file["sha256"]).exists()


@pytest.mark.databases
def test_an_upload_of_the_same_bytes_during_a_blob_release_keeps_its_content(
    client, alice, sessions, store, lm_bytes, monkeypatch
):
    """The worst interleaving: a blob's last file was deleted and its release found no reference; the same bytes are
    uploaded just before it removes them. The upload must wait and place the bytes again (before the fix it reused
    the blob, which the release then removed: a listed file whose content was gone)."""
    first = upload_ok(client, alice, lm_bytes)
    with session_scope(sessions) as session:
        delete_file(session, owner="alice", file_id=first["id"])
    outcome: dict[str, object] = {}
    remove = store.delete

    def an_upload_then_remove(sha256: str) -> None:
        def upload_meanwhile() -> None:
            outcome["response"] = upload(client, alice, lm_bytes)

        outcome["thread"] = thread = threading.Thread(target=upload_meanwhile)
        thread.start()
        thread.join(timeout=1.0)  # an unlocked upload commits well within this
        remove(sha256)

    monkeypatch.setattr(store, "delete", an_upload_then_remove)
    file_service.release_blob(sessions, store, first["sha256"])
    outcome["thread"].join(timeout=30)
    response = outcome["response"]
    assert response.status_code == 201, response.text
    content = client.get(f"/v1/files/{response.json()['id']}/content", headers=alice)
    assert content.status_code == 200
    assert content.content == lm_bytes


@pytest.mark.databases
def test_an_artifact_of_the_same_bytes_during_a_blob_release_keeps_its_content(sessions, store, tmp_path, monkeypatch):
    """The worker's side of the blob lock: a deleted file's blob is being released when a job records an artifact
    with the same bytes. The artifact must wait and place the bytes again. (On SQLite the recording's own writes wait
    for the release anyway; on PostgreSQL only the lock makes it wait, and this fails without it.)"""
    from workers.execute import record_artifacts

    content = b"a checkpoint that a user also uploaded, then deleted"
    sha, _ = store.put_chunks([content])
    with session_scope(sessions) as session:
        job = Job(owner="alice", status="running", recipe={"task": {"type": "adding"}}, files={}, metrics={})
        session.add(job)
        session.flush()
        job_id = job.id
    output = tmp_path / "model.safetensors"
    output.write_bytes(content)
    staged = [(output, *store.stage_file(output))]
    outcome: dict[str, threading.Thread] = {}
    remove = store.delete

    def a_recording_then_remove(digest: str) -> None:
        outcome["thread"] = thread = threading.Thread(
            target=record_artifacts, args=(sessions, store, job_id, "alice", staged)
        )
        thread.start()
        thread.join(timeout=1.0)  # an unlocked recording commits well within this
        remove(digest)

    monkeypatch.setattr(store, "delete", a_recording_then_remove)
    assert file_service.release_blob(sessions, store, sha)
    outcome["thread"].join(timeout=30)
    with sessions() as session:
        assert session.scalars(select(Artifact.sha256).where(Artifact.job_id == job_id)).all() == [sha]
    assert store.path(sha).read_bytes() == content


def test_an_upload_whose_blob_lock_fails_leaves_nothing_staged(app, alice, store, lm_bytes, monkeypatch):
    def timed_out(*args) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(file_service, "lock_blob", timed_out)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert upload(client, alice, lm_bytes).status_code == 500
    assert leftovers(store) == [] and blob_files(store) == []


@pytest.mark.databases
def test_another_owner_gets_404_on_every_file_route(client, alice, bob, lm_bytes):
    created = upload_ok(client, alice, lm_bytes)
    file_id = created["id"]
    hidden = error("not_found", f"no file {file_id!r}", "file_id")

    for method, path in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
        response = client.request(method, f"/v1/files/{file_id}{path}", headers=bob)
        assert response.status_code == 404, (method, path)
        assert response.json() == hidden
    assert client.get("/v1/files", headers=bob).json()["data"] == []
    # bob's DELETE changed nothing
    assert client.get(f"/v1/files/{file_id}/content", headers=alice).content == lm_bytes


def test_a_lost_blob_is_a_500_in_the_error_shape_without_a_stack_trace(app, alice, store, lm_bytes):
    with TestClient(app, raise_server_exceptions=False) as client:
        created = upload_ok(client, alice, lm_bytes)
        store.path(created["sha256"]).unlink()
        response = client.get(f"/v1/files/{created['id']}/content", headers=alice)

    assert response.status_code == 500
    assert response.json() == error("internal_error", "internal server error", None)
    assert "Traceback" not in response.text and str(store.root) not in response.text
