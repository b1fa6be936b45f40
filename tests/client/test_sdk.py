"""client.Client over real HTTP against a running service, and its retry and download rules on a scripted transport."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from client import Client, SparseqError
from client.sdk import safe_name
from tests.helpers.processes import free_port, navigation_recipe

# -- against the service --------------------------------------------------------------------------------------------


def test_a_file_round_trips_streamed_and_is_gone_after_its_deletion(sparseq, lm_text, tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_bytes(lm_text)
    created = sparseq.upload_file(source, "lm_text")
    assert (created["status"], created["filename"], created["bytes"]) == ("processed", "corpus.txt", len(lm_text))
    assert created["sha256"] == hashlib.sha256(lm_text).hexdigest()
    assert sparseq.get_file(created["id"]) == created

    copy = sparseq.download_file(created["id"], tmp_path / "copy" / "corpus.txt")
    assert copy.read_bytes() == lm_text
    assert list(copy.parent.iterdir()) == [copy]  # no partial file left beside it

    assert sparseq.delete_file(created["id"])["deleted"] is True
    with pytest.raises(SparseqError) as gone:
        sparseq.get_file(created["id"])
    assert (gone.value.status, gone.value.code, gone.value.param) == (404, "not_found", "file_id")


def test_a_listing_follows_the_cursor_over_every_page(sparseq, tmp_path):
    ours = []
    for i in range(5):
        path = tmp_path / f"part{i}.txt"
        path.write_text(f"page {i} of a listing test\n")
        ours.append(sparseq.upload_file(path, "lm_text")["id"])
    listed = [f["id"] for f in sparseq.files(page_size=2)]
    assert len(listed) == len(set(listed))
    assert [i for i in listed if i in ours] == ours[::-1]  # newest first
    one_page = sparseq._get("/v1/files", limit=100)["data"]
    assert listed == [f["id"] for f in one_page]


def test_a_job_is_followed_to_its_end_and_its_artifacts_are_verified(sparseq, tmp_path):
    job = sparseq.create_job(navigation_recipe(steps_per_epoch=6, epochs=2, target_sparsity=0.8))
    updates = []
    done = sparseq.wait(job["id"], timeout=180, poll_interval=0.2, on_update=updates.append)
    assert done["status"] == "succeeded", done
    assert updates[-1]["status"] == "succeeded" and updates[-1]["progress"] == 1.0
    progress = [u["progress"] for u in updates]
    assert progress == sorted(progress)
    assert len({(u["status"], u["progress"]) for u in updates}) == len(updates)  # one call per change

    paths = sparseq.download_artifacts(job["id"], tmp_path / "out")
    report = tmp_path / "out" / "report.json"
    report.unlink()
    (tmp_path / "out" / "model.safetensors").write_bytes(b"kept")
    with pytest.raises(FileExistsError, match=r"model\.safetensors"):
        sparseq.download_artifacts(job["id"], tmp_path / "out")
    assert not report.exists()  # refused before any download, not half-way
    paths = sparseq.download_artifacts(job["id"], tmp_path / "out", overwrite=True)
    listed = {a["filename"]: a["sha256"] for a in sparseq.artifacts(job["id"])}
    assert "model.safetensors" in listed
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths} == listed
    assert any(e["message"] == "job succeeded" for e in sparseq.events(job["id"]))


def test_one_idempotency_key_makes_one_job(sparseq):
    recipe = navigation_recipe(steps_per_epoch=50, epochs=50)
    first = sparseq.create_job(recipe, idempotency_key="client-test-once")
    again = sparseq.create_job(recipe, idempotency_key="client-test-once")
    assert again["id"] == first["id"]
    assert [j["id"] for j in sparseq.jobs()].count(first["id"]) == 1
    assert sparseq.cancel_job(first["id"])["status"] in ("cancelling", "cancelled")
    assert sparseq.wait(first["id"], timeout=60, poll_interval=0.2)["status"] == "cancelled"


def test_api_errors_carry_the_status_code_message_and_param(sparseq, server):
    with pytest.raises(SparseqError) as missing:
        sparseq.get_job("job_nope")
    assert (missing.value.status, missing.value.code, missing.value.param) == (404, "not_found", "job_id")
    assert str(missing.value) == "not_found: no job 'job_nope' (parameter 'job_id')"

    with pytest.raises(SparseqError) as invalid:
        sparseq.create_job({"task": {"type": "no_such_task"}})
    assert invalid.value.status == 422 and invalid.value.param.startswith("recipe")

    with Client("sk_not-a-key-at-all-xxxxxxxx", server.url) as stranger, pytest.raises(SparseqError) as refused:
        stranger.get_job("job_nope")
    assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")


def test_an_unreachable_service_is_a_connection_error():
    with (
        Client("sk_x", f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01) as nowhere,
        pytest.raises(SparseqError) as down,
    ):
        nowhere.get_job("job_x")
    assert (down.value.status, down.value.code) == (0, "connection_error")


def test_no_api_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SPARSEQ_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SPARSEQ_API_KEY"):
        Client()


# -- retry and download rules, on a scripted transport ------------------------------------------------------------


def scripted(*answers):
    """A transport that answers requests in turn (a Response, or an exception to raise) and records them."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), seen


JOB = {"object": "job", "id": "job_1", "status": "queued", "progress": 0.0}
BUSY = httpx.Response(503, json={"error": {"code": "unavailable", "message": "busy", "param": None}})


def test_reads_are_retried_on_503_and_lost_connections_then_give_up():
    transport, seen = scripted(BUSY, httpx.ConnectError("refused"), httpx.Response(200, json=JOB))
    with Client("sk_x", "http://sparseq.test", retries=3, backoff=0, transport=transport) as client:
        assert client.get_job("job_1") == JOB
    assert len(seen) == 3

    transport, seen = scripted(BUSY, BUSY)
    with (
        Client("sk_x", "http://sparseq.test", retries=1, backoff=0, transport=transport) as client,
        pytest.raises(SparseqError) as busy,
    ):
        client.get_job("job_1")
    assert (busy.value.status, busy.value.code, len(seen)) == (503, "unavailable", 2)


def test_a_job_creation_is_retried_only_when_the_connection_failed_and_with_one_idempotency_key():
    transport, seen = scripted(httpx.ConnectError("refused"), httpx.Response(201, json=JOB))
    with Client("sk_x", "http://sparseq.test", backoff=0, transport=transport) as client:
        assert client.create_job({"task": {}}) == JOB
    keys = [r.headers["idempotency-key"] for r in seen]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert json.loads(seen[1].content) == {"recipe": {"task": {}}, "files": {}}

    # A 503 means the service answered: it has already failed the job under that key, so retrying gains nothing.
    transport, seen = scripted(BUSY, httpx.Response(201, json=JOB))
    with Client("sk_x", "http://sparseq.test", backoff=0, transport=transport) as client, pytest.raises(SparseqError):
        client.create_job({"task": {}})
    assert len(seen) == 1


def test_a_download_that_does_not_match_its_digest_is_refused_and_leaves_nothing(tmp_path):
    body = b"the bytes that arrived"
    claimed = hashlib.sha256(b"the bytes that were sent").hexdigest()
    transport, _ = scripted(httpx.Response(200, content=body, headers={"x-content-sha256": claimed}))
    with Client("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(SparseqError) as corrupt:
        client.download_artifact("art_1", tmp_path / "model.safetensors")
    assert corrupt.value.code == "corrupt_download"
    assert list(tmp_path.iterdir()) == []


def test_an_error_page_that_is_not_the_api_shape_still_raises_with_its_status():
    transport, _ = scripted(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with (
        Client("sk_x", "http://sparseq.test", retries=0, transport=transport) as client,
        pytest.raises(SparseqError) as proxy,
    ):
        client.get_job("job_1")
    assert (proxy.value.status, proxy.value.code, proxy.value.message) == (502, "http_502", "<html>Bad Gateway</html>")


def test_a_key_a_header_cannot_carry_is_refused_without_echoing_it():
    with pytest.raises(ValueError, match="trailing newline") as refused:
        Client("sk_SECRET-from-a-windows-file\r", "http://sparseq.test")
    assert "SECRET" not in str(refused.value)


def test_a_connection_error_does_not_show_the_credentials_of_the_url():
    url = f"http://user:hunter2@127.0.0.1:{free_port()}"
    with Client("sk_x", url, retries=0) as nowhere, pytest.raises(SparseqError) as down:
        nowhere.get_job("job_x")
    assert down.value.code == "connection_error" and "hunter2" not in str(down.value)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("model.safetensors", "model.safetensors"),
        ("../../.bashrc", ".bashrc"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\run.bat", "run.bat"),
        ("C:\\Users\\x\\a.txt", "a.txt"),
    ],
)
def test_a_server_given_file_name_keeps_only_its_last_component(sent, kept):
    assert safe_name(sent) == kept


@pytest.mark.parametrize("sent", ["", ".", "..", "a/..", "a\\.."])
def test_a_server_given_file_name_that_is_no_file_is_refused(sent):
    with pytest.raises(SparseqError) as refused:
        safe_name(sent)
    assert refused.value.code == "bad_filename"


def test_a_download_never_replaces_a_file_unless_asked(tmp_path):
    body = b"new bytes"
    answer = httpx.Response(200, content=body, headers={"x-content-sha256": hashlib.sha256(body).hexdigest()})
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"the user's own file")
    transport, seen = scripted(answer)
    with Client("sk_x", "http://sparseq.test", transport=transport) as client:
        with pytest.raises(FileExistsError):
            client.download_artifact("art_1", target)
        assert target.read_bytes() == b"the user's own file" and seen == []
        assert client.download_artifact("art_1", target, overwrite=True).read_bytes() == body


@pytest.mark.parametrize(("listed", "ok"), [(b"sent", True), (b"something else", False)])
def test_a_download_without_a_digest_header_is_checked_against_the_listed_digest(listed, ok, tmp_path):
    described = {"object": "artifact", "id": "art_1", "sha256": hashlib.sha256(listed).hexdigest()}
    transport, seen = scripted(httpx.Response(200, content=b"sent"), httpx.Response(200, json=described))
    with Client("sk_x", "http://sparseq.test", transport=transport) as client:
        if ok:
            assert client.download_artifact("art_1", tmp_path / "a").read_bytes() == b"sent"
        else:
            with pytest.raises(SparseqError) as corrupt:
                client.download_artifact("art_1", tmp_path / "a")
            assert corrupt.value.code == "corrupt_download"
            assert list(tmp_path.iterdir()) == []
    assert [r.url.path for r in seen] == ["/v1/artifacts/art_1/content", "/v1/artifacts/art_1"]


def test_an_answer_that_is_not_json_is_an_error_not_a_crash():
    transport, _ = scripted(httpx.Response(200, text="<html>a login page</html>"))
    with Client("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(SparseqError) as bad:
        client.get_job("job_1")
    assert bad.value.code == "bad_response"


def test_a_failed_download_leaves_the_users_files_alone(tmp_path):
    own = tmp_path / "model.safetensors.part"  # a file of the user's that only looks like a scratch file
    own.write_bytes(b"mine")
    missing = httpx.Response(404, json={"error": {"code": "not_found", "message": "no artifact", "param": None}})
    transport, _ = scripted(missing)
    with Client("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(SparseqError):
        client.download_artifact("art_1", tmp_path / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors.part"]
    assert own.read_bytes() == b"mine"


def test_a_file_that_appears_during_a_download_is_not_replaced(tmp_path):
    target = tmp_path / "model.safetensors"
    body = b"downloaded"

    def answer_after_the_user_wrote_the_file(request: httpx.Request) -> httpx.Response:
        target.write_bytes(b"written meanwhile")
        return httpx.Response(200, content=body, headers={"x-content-sha256": hashlib.sha256(body).hexdigest()})

    transport = httpx.MockTransport(answer_after_the_user_wrote_the_file)
    with Client("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(FileExistsError):
        client.download_artifact("art_1", target)
    assert target.read_bytes() == b"written meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no scratch file left


def test_a_job_whose_artifacts_share_a_name_is_refused_before_any_download(tmp_path):
    listing = {
        "object": "list",
        "has_more": False,
        "data": [
            {"id": "art_1", "filename": "x/Model.pt", "sha256": "0" * 64},
            {"id": "art_2", "filename": "model.pt", "sha256": "1" * 64},
        ],
    }
    transport, seen = scripted(httpx.Response(200, json=listing))
    with Client("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(SparseqError) as twice:
        client.download_artifacts("job_1", tmp_path)
    assert twice.value.code == "bad_filename"
    assert len(seen) == 1 and list(tmp_path.iterdir()) == []


def test_a_listing_without_a_digest_is_a_bad_response(tmp_path):
    transport, _ = scripted(httpx.Response(200, content=b"x"), httpx.Response(200, json={"id": "art_1"}))
    with Client("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(SparseqError) as bad:
        client.download_artifact("art_1", tmp_path / "a")
    assert bad.value.code == "bad_response" and list(tmp_path.iterdir()) == []
