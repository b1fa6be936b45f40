"""The ``sparseq`` SDK (Sparseq and its async twin) over real HTTP against a served API, its error classes and retry
rule against a scripted HTTP server, and its download rules on a scripted transport."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import itertools
import json
import time

import httpx
import pytest
from sparseq import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AsyncSparseq,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DownloadError,
    FileObject,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Sparseq,
    SparseqError,
    UnprocessableEntityError,
    safe_name,
)
from sparseq._base import MAX_BACKOFF, Attempts, Call

from tests.helpers.processes import LM_RECIPE, free_port, navigation_recipe
from tests.helpers.scripted_http import Answer, api_error, json_answer, scripted_server

LONG = navigation_recipe(steps_per_epoch=50, epochs=50)  # runs minutes: for tests that cancel it
QUICK = {**navigation_recipe(steps_per_epoch=4, epochs=1), "reference": "none", "output": {"measure_speed": False}}


# -- every resource, against the service --------------------------------------------------------------------------


def test_files_upload_retrieve_list_download_and_delete(sparseq, lm_text, tmp_path, monkeypatch):
    source = tmp_path / "corpus.txt"
    source.write_bytes(lm_text)
    created = sparseq.files.upload(source, purpose="lm_text")
    assert isinstance(created, FileObject)
    assert (created.status, created.filename, created.bytes) == ("processed", "corpus.txt", len(lm_text))
    assert created.sha256 == hashlib.sha256(lm_text).hexdigest()
    assert sparseq.files.retrieve(created.id) == created

    ours = [created.id]
    for i in range(4):
        part = tmp_path / f"part{i}.txt"
        part.write_text(f"page {i} of a listing test\n")
        ours.append(sparseq.files.upload(part, purpose="lm_text").id)
    listed = [f.id for f in sparseq.files.list(page_size=2)]  # three pages or more, followed by the iterator
    assert len(listed) == len(set(listed)) and [i for i in listed if i in ours] == ours[::-1]  # newest first
    assert [f.id for f in sparseq.files.list(purpose="weights")] == []

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").unlink()
    copy = sparseq.files.download(created.id)  # under its own name, in the current directory
    assert copy.read_bytes() == lm_text and copy.name == "corpus.txt"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no scratch file left

    assert sparseq.files.delete(created.id).deleted is True
    with pytest.raises(NotFoundError) as gone:
        sparseq.files.retrieve(created.id)
    assert (gone.value.status, gone.value.code, gone.value.param) == (404, "not_found", "file_id")


def test_a_job_is_followed_to_its_end_and_its_artifacts_are_verified(sparseq, tmp_path):
    job = sparseq.jobs.create(navigation_recipe(steps_per_epoch=6, epochs=2, target_sparsity=0.8))
    assert job.status in ("queued", "running") and job.recipe["task"]["type"] == "navigation"
    updates = []
    done = sparseq.jobs.wait(job.id, timeout=180, poll_interval=0.2, on_update=updates.append)
    assert done.status == "succeeded" and done.done, done
    assert updates[-1].status == "succeeded" and updates[-1].progress == 1.0
    progress = [u.progress for u in updates]
    assert progress == sorted(progress)
    assert len({(u.status, u.progress, json.dumps(u.to_dict()["live"])) for u in updates}) == len(updates)
    assert done.metrics["name"] == "valid_position_error_cm" and sparseq.jobs.retrieve(job.id) == done
    assert job.id in [j.id for j in sparseq.jobs.list(status="succeeded")]

    paths = sparseq.jobs.download(job.id, tmp_path / "out")
    listed = {a.filename: a for a in sparseq.jobs.artifacts(job.id)}
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths} == {
        name: a.sha256 for name, a in listed.items()
    }
    report = tmp_path / "out" / "report.json"
    report.unlink()
    (tmp_path / "out" / "model.safetensors").write_bytes(b"kept")
    with pytest.raises(FileExistsError, match=r"model\.safetensors"):
        sparseq.jobs.download(job.id, tmp_path / "out")
    assert not report.exists()  # refused before any download, not half-way

    checkpoint = listed["model.safetensors"]
    assert sparseq.artifacts.retrieve(checkpoint.id) == checkpoint and checkpoint.job_id == job.id
    one = sparseq.artifacts.download(checkpoint.id, tmp_path / "one" / "m.safetensors")
    assert hashlib.sha256(one.read_bytes()).hexdigest() == checkpoint.sha256
    events = list(sparseq.jobs.events(job.id, page_size=3))
    assert any(e.message == "job succeeded" for e in events)
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)


def test_one_idempotency_key_makes_one_job_and_another_body_under_it_is_a_conflict(sparseq):
    first = sparseq.jobs.create(LONG, idempotency_key="client-test-once")
    again = sparseq.jobs.create(LONG, idempotency_key="client-test-once")
    assert again.id == first.id
    assert [j.id for j in sparseq.jobs.list()].count(first.id) == 1
    with pytest.raises(ConflictError) as reused:
        sparseq.jobs.create(LM_RECIPE, idempotency_key="client-test-once")
    assert (reused.value.status, reused.value.code) == (409, "idempotency_key_reused")
    assert sparseq.jobs.cancel(first.id).status in ("cancelling", "cancelled")
    assert sparseq.jobs.wait(first.id, timeout=60, poll_interval=0.2).status == "cancelled"


def test_sweeps_are_created_listed_retrieved_and_cancelled(sparseq):
    sweep = sparseq.sweeps.create(LONG, grid={"training.seed": [0, 1, 2]}, max_parallel=1)
    assert (sweep.status, sweep.combinations, sweep.max_parallel) == ("running", 3, 1)
    assert sweep.id in [s.id for s in sparseq.sweeps.list()]
    assert sparseq.sweeps.retrieve(sweep.id).id == sweep.id
    cancelled = sparseq.sweeps.cancel(sweep.id)
    assert cancelled.status == "cancelled"
    done = sparseq.sweeps.wait(sweep.id, timeout=60, poll_interval=0.2)
    for job_id in done.jobs:  # the one released combination is stopped too
        assert sparseq.jobs.wait(job_id, timeout=60, poll_interval=0.2).status == "cancelled"
    with pytest.raises(UnprocessableEntityError) as refused:
        sparseq.sweeps.create(LONG, grid={"model.hidden_size": [32, -1]})
    assert refused.value.status == 422


def test_tasks_estimate_and_the_recipe_schema(sparseq):
    listing = sparseq.tasks.list()
    tasks = {t.type: t for t in listing.data}
    assert {"language_model", "navigation"} <= set(tasks) and "lm_text" in listing.purposes
    assert tasks["language_model"].roles["train"].purpose == "lm_text"
    assert tasks["navigation"].metric.lower_is_better is True
    estimate = sparseq.estimate(LM_RECIPE, vocab_size=300)
    assert 0 < estimate.nonzero_parameters <= estimate.parameters
    assert {w.name for w in estimate.weights} >= {"embedding.weight"}
    assert "properties" in sparseq.recipe_schema() or "$defs" in sparseq.recipe_schema()


def test_errors_from_the_service_are_one_class_per_status_under_one_base(sparseq, server):
    with pytest.raises(NotFoundError) as missing:
        sparseq.jobs.retrieve("job_nope")
    assert str(missing.value) == "not_found: no job 'job_nope' (parameter 'job_id')"
    with pytest.raises(UnprocessableEntityError) as invalid:
        sparseq.jobs.create({"task": {"type": "no_such_task"}})
    assert invalid.value.param.startswith("recipe")
    with pytest.raises(UnprocessableEntityError) as cursor:
        sparseq._send(Call("GET", "/v1/jobs", params={"after": "job_x"}))  # not an id: no listing gave it
    assert (cursor.value.status, cursor.value.param) == (422, "after")
    with pytest.raises(BadRequestError) as body:  # a file role the task does not take
        sparseq.jobs.create(QUICK, files={"poems": "file_x"})
    assert (body.value.status, body.value.param) == (400, "files.poems")
    with Sparseq("sk_not-a-key-at-all-xxxxxxxx", server.url) as stranger, pytest.raises(AuthenticationError) as who:
        stranger.jobs.retrieve("job_nope")
    assert (who.value.status, who.value.code) == (401, "invalid_api_key")
    for error in (missing.value, invalid.value, cursor.value, body.value, who.value):
        assert isinstance(error, APIStatusError) and isinstance(error, SparseqError)
        assert error.response.status_code == error.status


def test_a_rate_limited_call_waits_what_retry_after_says_and_then_succeeds(server):
    recipe = {**LM_RECIPE, "task": {"type": "language_model", "max_vocab": 300}}
    with Sparseq(server.key, server.url, max_retries=0) as once:
        with pytest.raises(RateLimitError) as limited:
            for _ in range(10):  # the service allows 3 estimates per 4 s for this key
                once.estimate(recipe, vocab_size=300)
        refused_at = time.monotonic()
    wait = limited.value.retry_after
    assert limited.value.code == "rate_limited" and wait is not None and 1 <= wait <= 4
    with Sparseq(server.key, server.url, max_retries=2, backoff=0.01) as patient:
        assert patient.estimate(recipe, vocab_size=300).parameters > 0
    waited = time.monotonic() - refused_at
    # a back-off of its own (0.01 s, 0.02 s) would have given up long before: the client waited the service's time
    assert waited >= wait - 1.0, (waited, wait)


def test_the_async_twin_does_the_same_over_the_same_api(server, lm_text, tmp_path):
    async def flow():
        async with AsyncSparseq(server.key, server.url, backoff=0.05) as client:
            source = tmp_path / "corpus.txt"
            source.write_bytes(lm_text)
            uploaded = await client.files.upload(source, purpose="lm_text")
            assert (await client.files.retrieve(uploaded.id)) == uploaded
            assert uploaded.id in [f.id async for f in client.files.list(page_size=1)]
            job = await client.jobs.create(QUICK, idempotency_key="async-1")
            assert (await client.jobs.create(QUICK, idempotency_key="async-1")).id == job.id
            seen = []
            done = await client.jobs.wait(job.id, timeout=180, poll_interval=0.2, on_update=seen.append)
            assert done.status == "succeeded" and seen[-1].status == "succeeded"
            assert job.id in [j.id async for j in client.jobs.list(page_size=2)]
            assert "job succeeded" in [e.message async for e in client.jobs.events(job.id)]
            paths = await client.jobs.download(job.id, tmp_path / "async")
            listed = {a.filename: a.sha256 for a in await client.jobs.artifacts(job.id)}
            assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths} == listed
            copy = await client.files.download(uploaded.id, tmp_path / "copy.txt")
            assert copy.read_bytes() == lm_text
            assert (await client.files.delete(uploaded.id)).deleted
            assert (await client.tasks.list()).purposes == (await client.tasks.list()).purposes
            long = await client.jobs.create(LONG)
            assert (await client.jobs.cancel(long.id)).status in ("cancelling", "cancelled")
            sweep = await client.sweeps.create(LONG, grid={"training.seed": [0, 1]}, max_parallel=1)
            assert (await client.sweeps.cancel(sweep.id)).status == "cancelled"
            assert sweep.id in [s.id async for s in client.sweeps.list()]
            with pytest.raises(NotFoundError):
                await client.jobs.retrieve("job_nope")
            with pytest.raises(UnprocessableEntityError):
                await client.jobs.create({"task": {"type": "no_such_task"}})
            return done

    assert asyncio.run(flow()).metrics["name"] == "valid_position_error_cm"


# -- error classes and the retry rule, against a scripted HTTP server ---------------------------------------------

JOB = {"object": "job", "id": "job_1", "status": "queued", "recipe": {}, "progress": 0.0, "created_at": 1}


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, BadRequestError), (403, PermissionDeniedError), (404, NotFoundError), (409, ConflictError),
     (422, UnprocessableEntityError), (500, InternalServerError), (418, APIStatusError)],
)  # fmt: skip
def test_each_status_family_raises_its_own_class(status, kind):
    with (
        scripted_server(api_error(status, "scripted_code", "what went wrong")) as (url, received),
        Sparseq("sk_x", url, max_retries=0) as client,
        pytest.raises(kind) as raised,
    ):
        client.jobs.retrieve("job_1")
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        status,
        "scripted_code",
        "what went wrong",
    )
    assert received[0].headers["Authorization"] == "Bearer sk_x" and received[0].path == "/v1/jobs/job_1"


def test_a_5xx_read_is_retried_with_a_jittered_growing_back_off_then_raised():
    with (
        scripted_server(*[api_error(500, "internal")] * 4) as (url, received),
        Sparseq("sk_x", url, max_retries=3, backoff=0.1) as client,
        pytest.raises(InternalServerError),
    ):
        client.jobs.retrieve("job_1")
    gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
    assert len(received) == 4
    for attempt, gap in enumerate(gaps):  # 0.1·2^n times a factor in [0.5, 1], plus the round trip (a loaded CI)
        assert 0.1 * 2**attempt * 0.5 - 0.01 <= gap <= 0.1 * 2**attempt + 1.0, gaps


def test_retry_after_as_an_http_date_is_honoured_and_a_long_one_is_not_waited_for():
    date = email.utils.format_datetime(_utc_in(2.2), usegmt=True)
    job = json_answer(200, json.dumps(JOB))
    with (
        scripted_server(api_error(503, "unavailable", **{"Retry-After": date}), job) as (url, received),
        Sparseq("sk_x", url, max_retries=1, backoff=0.01) as client,
    ):
        assert client.jobs.retrieve("job_1").id == "job_1"
    assert received[1].at - received[0].at >= 1.0  # an HTTP date has whole seconds: 2.2 s ahead is at least 1.2

    with (
        scripted_server(api_error(429, "rate_limited", **{"Retry-After": "3600"})) as (url, received),
        Sparseq("sk_x", url, max_retries=3) as client,
        pytest.raises(RateLimitError) as limited,
    ):
        client.jobs.retrieve("job_1")
    assert len(received) == 1 and limited.value.retry_after == 3600


def _utc_in(seconds: float):
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_proxy_page_is_an_error_of_its_status_and_an_answer_that_is_not_the_api_is_a_bad_response():
    page = Answer(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"})
    login = Answer(200, b"<html>a login page</html>", {"Content-Type": "text/html"})
    wrong = json_answer(200, '{"id": "job_1"}')
    with (
        scripted_server(page, login, wrong) as (url, _),
        Sparseq("sk_x", url, max_retries=0) as client,
        pytest.raises(InternalServerError) as proxy,
    ):
        client.jobs.retrieve("job_1")
        assert (proxy.value.status, proxy.value.code, proxy.value.message) == (
            502,
            "http_502",
            "<html>Bad Gateway</html>",
        )
        with pytest.raises(APIResponseValidationError, match="not JSON"):
            client.jobs.retrieve("job_1")
        with pytest.raises(APIResponseValidationError, match="not a Job"):
            client.jobs.retrieve("job_1")


def test_a_server_too_slow_is_a_timeout_and_no_server_a_connection_error():
    with (
        scripted_server(Answer(200, b"{}", delay=1.5)) as (url, _),
        Sparseq("sk_x", url, timeout=0.3, max_retries=0) as client,
        pytest.raises(APITimeoutError) as slow,
    ):
        client.jobs.retrieve("job_1")
    assert isinstance(slow.value, APIConnectionError) and slow.value.code == "timeout" and slow.value.status == 0
    with (
        Sparseq("sk_x", f"http://127.0.0.1:{free_port()}", max_retries=1, backoff=0.01) as nowhere,
        pytest.raises(APIConnectionError) as down,
    ):
        nowhere.jobs.retrieve("job_x")
    assert (down.value.status, down.value.code) == (0, "connection_error")


def test_an_upload_refused_with_429_is_sent_again_whole_and_a_5xx_is_not(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_bytes(b"the cat sat\n" * 1000)
    stored = {"object": "file", "id": "file_1", "purpose": "lm_text", "filename": "corpus.txt", "bytes": 12000,
              "sha256": "0" * 64, "status": "processed", "created_at": 1}  # fmt: skip
    limited = api_error(429, "rate_limited", **{"Retry-After": "0"})
    with (
        scripted_server(limited, json_answer(201, json.dumps(stored))) as (url, received),
        Sparseq("sk_x", url, max_retries=2) as client,
    ):
        assert client.files.upload(source, purpose="lm_text").id == "file_1"
    assert len(received) == 2 and len(received[0].body) == len(received[1].body)  # the same but for the boundary
    assert all(b"the cat sat\n" * 1000 in r.body for r in received)
    with (
        scripted_server(api_error(503, "unavailable"), json_answer(201, json.dumps(stored))) as (url, received),
        Sparseq("sk_x", url, max_retries=2, backoff=0.01) as client,
        pytest.raises(InternalServerError),
    ):
        client.files.upload(source, purpose="lm_text")
    assert len(received) == 1


def test_the_back_off_is_jittered_capped_and_grows():
    attempts = Attempts(Call("GET", "/x"), max_retries=50, backoff=0.5, shown_url="http://x")
    busy = httpx.Response(503, request=httpx.Request("GET", "http://x/x"))
    waits = [attempts.answered(busy) for _ in range(12)]
    for n, wait in enumerate(waits):
        bound = min(MAX_BACKOFF, 0.5 * 2**n)
        assert bound * 0.5 <= wait <= bound
    assert len({round(w, 9) for w in waits[6:]}) > 1  # capped, yet not all equal: jittered


# -- rules of creation and download, on a scripted transport ------------------------------------------------------


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


BUSY = httpx.Response(503, json={"error": {"code": "unavailable", "message": "busy", "param": None}})
LIMITED = httpx.Response(429, json={"error": {"code": "rate_limited", "message": "x", "param": None}})


def test_a_job_creation_is_retried_on_lost_connections_and_429_with_one_idempotency_key_and_never_on_5xx():
    transport, seen = scripted(httpx.ConnectError("refused"), LIMITED, httpx.Response(201, json=JOB))
    with Sparseq("sk_x", "http://sparseq.test", backoff=0, transport=transport) as client:
        assert client.jobs.create({"task": {}}).id == "job_1"
    keys = [r.headers["idempotency-key"] for r in seen]
    assert len(keys) == 3 and len(set(keys)) == 1
    assert json.loads(seen[2].content) == {"recipe": {"task": {}}, "files": {}}

    # A 503 means the service answered: it has already failed the job under that key, so retrying gains nothing.
    transport, seen = scripted(BUSY, httpx.Response(201, json=JOB))
    with (
        Sparseq("sk_x", "http://sparseq.test", backoff=0, transport=transport) as client,
        pytest.raises(InternalServerError),
    ):
        client.jobs.create({"task": {}})
    assert len(seen) == 1


def test_unknown_fields_of_a_newer_service_are_kept():
    newer = {**JOB, "priority": "high", "live": {"phase": "train", "step": 1, "total_steps": 9, "gpu_util": 0.5}}
    transport, _ = scripted(httpx.Response(200, json=newer))
    with Sparseq("sk_x", "http://sparseq.test", transport=transport) as client:
        job = client.jobs.retrieve("job_1")
    assert job.priority == "high" and job.live.gpu_util == 0.5
    assert job.to_dict()["priority"] == "high" and job.to_dict()["live"]["gpu_util"] == 0.5


def test_an_id_cannot_reach_another_route():
    transport, seen = scripted(httpx.Response(200, json=JOB))
    with Sparseq("sk_x", "http://sparseq.test", transport=transport) as client:
        client.jobs.retrieve("../files/file_1")
    assert seen[0].url.raw_path == b"/v1/jobs/..%2Ffiles%2Ffile_1"


def test_a_download_that_does_not_match_its_digest_is_refused_and_leaves_nothing(tmp_path):
    body = b"the bytes that arrived"
    claimed = hashlib.sha256(b"the bytes that were sent").hexdigest()
    transport, _ = scripted(httpx.Response(200, content=body, headers={"x-content-sha256": claimed}))
    with Sparseq("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(DownloadError) as bad:
        client.artifacts.download("art_1", tmp_path / "model.safetensors")
    assert bad.value.code == "corrupt_download"
    assert list(tmp_path.iterdir()) == []


def test_a_key_a_header_cannot_carry_is_refused_without_echoing_it(monkeypatch):
    with pytest.raises(ValueError, match="trailing newline") as refused:
        Sparseq("sk_SECRET-from-a-windows-file\r", "http://sparseq.test")
    assert "SECRET" not in str(refused.value)
    monkeypatch.delenv("SPARSEQ_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SPARSEQ_API_KEY"):
        Sparseq()
    with pytest.raises(ValueError, match="SPARSEQ_API_KEY"):
        AsyncSparseq()


def test_a_connection_error_does_not_show_the_credentials_of_the_url():
    url = f"http://user:hunter2@127.0.0.1:{free_port()}"
    with Sparseq("sk_x", url, max_retries=0) as nowhere, pytest.raises(APIConnectionError) as down:
        nowhere.jobs.retrieve("job_x")
    assert "hunter2" not in str(down.value)


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
    with pytest.raises(DownloadError) as refused:
        safe_name(sent)
    assert refused.value.code == "bad_filename"


def test_a_download_never_replaces_a_file_unless_asked(tmp_path):
    body = b"new bytes"
    answer = httpx.Response(200, content=body, headers={"x-content-sha256": hashlib.sha256(body).hexdigest()})
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"the user's own file")
    transport, seen = scripted(answer)
    with (
        Sparseq("sk_x", "http://sparseq.test", transport=transport) as client,
        pytest.raises(FileExistsError),
    ):
        client.artifacts.download("art_1", target)
        assert target.read_bytes() == b"the user's own file" and seen == []
        assert client.artifacts.download("art_1", target, overwrite=True).read_bytes() == body


@pytest.mark.parametrize(("listed", "ok"), [(b"sent", True), (b"something else", False)])
def test_a_download_without_a_digest_header_is_checked_against_the_listed_digest(listed, ok, tmp_path):
    described = {"object": "artifact", "id": "art_1", "sha256": hashlib.sha256(listed).hexdigest()}
    transport, seen = scripted(httpx.Response(200, content=b"sent"), httpx.Response(200, json=described))
    with Sparseq("sk_x", "http://sparseq.test", transport=transport) as client:
        if ok:
            assert client.artifacts.download("art_1", tmp_path / "a").read_bytes() == b"sent"
        else:
            with pytest.raises(DownloadError) as corrupt:
                client.artifacts.download("art_1", tmp_path / "a")
            assert corrupt.value.code == "corrupt_download"
            assert list(tmp_path.iterdir()) == []
    assert [r.url.path for r in seen] == ["/v1/artifacts/art_1/content", "/v1/artifacts/art_1"]


def test_a_failed_download_leaves_the_users_files_alone(tmp_path):
    own = tmp_path / "model.safetensors.part"  # a file of the user's that only looks like a scratch file
    own.write_bytes(b"mine")
    missing = httpx.Response(404, json={"error": {"code": "not_found", "message": "no artifact", "param": None}})
    transport, _ = scripted(missing)
    with Sparseq("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(NotFoundError):
        client.artifacts.download("art_1", tmp_path / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors.part"]
    assert own.read_bytes() == b"mine"


def test_a_file_that_appears_during_a_download_is_not_replaced(tmp_path):
    target = tmp_path / "model.safetensors"
    body = b"downloaded"

    def answer_after_the_user_wrote_the_file(request: httpx.Request) -> httpx.Response:
        target.write_bytes(b"written meanwhile")
        return httpx.Response(200, content=body, headers={"x-content-sha256": hashlib.sha256(body).hexdigest()})

    transport = httpx.MockTransport(answer_after_the_user_wrote_the_file)
    with Sparseq("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(FileExistsError):
        client.artifacts.download("art_1", target)
    assert target.read_bytes() == b"written meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no scratch file left


def test_a_job_whose_artifacts_share_a_name_is_refused_before_any_download(tmp_path):
    artifact = {"object": "artifact", "job_id": "job_1", "kind": "plot", "bytes": 1, "created_at": 1}
    listing = {
        "object": "list",
        "has_more": False,
        "data": [
            {**artifact, "id": "art_1", "filename": "x/Model.pt", "sha256": "0" * 64},
            {**artifact, "id": "art_2", "filename": "model.pt", "sha256": "1" * 64},
        ],
    }
    transport, seen = scripted(httpx.Response(200, json=listing))
    with Sparseq("sk_x", "http://sparseq.test", transport=transport) as client, pytest.raises(DownloadError) as twice:
        client.jobs.download("job_1", tmp_path)
    assert twice.value.code == "bad_filename"
    assert len(seen) == 1 and list(tmp_path.iterdir()) == []


def test_a_listing_without_a_digest_is_a_bad_response(tmp_path):
    transport, _ = scripted(httpx.Response(200, content=b"x"), httpx.Response(200, json={"id": "art_1"}))
    with (
        Sparseq("sk_x", "http://sparseq.test", transport=transport) as client,
        pytest.raises(APIResponseValidationError),
    ):
        client.artifacts.download("art_1", tmp_path / "a")
    assert list(tmp_path.iterdir()) == []
