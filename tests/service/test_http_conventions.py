"""What the OpenAPI document promises, as the service answers it: ranged downloads (206, 416, 400) in the declared
shapes, ``Allow`` naming every method of a path, an empty cursor taken as none, a non-UTF-8 JSON body a declared 422."""

from __future__ import annotations

import hashlib

import pytest

from tests.helpers.api import add_artifact, create_job_ok, error, lm_recipe, upload_ok

DATA = bytes(range(256)) * 40  # 10240 bytes, each position distinguishable modulo 256


@pytest.fixture
def stored(client, alice, sessions, store, train_file) -> dict[str, str]:
    """One artifact and one file, both holding DATA: the two content routes."""
    job = create_job_ok(client, alice, train_file["id"])
    artifact_id = add_artifact(sessions, store, job["id"], "alice", DATA)
    file_id = upload_ok(client, alice, DATA, purpose="weights", filename="w.bin")["id"]
    return {"artifact": f"/v1/artifacts/{artifact_id}/content", "file": f"/v1/files/{file_id}/content"}


@pytest.mark.parametrize("route", ["artifact", "file"])
@pytest.mark.parametrize(
    ("requested", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-40", 10200, 10239),
        ("bytes=10230-99999", 10230, 10239),
    ],
)
def test_one_range_is_206_with_the_slice_and_the_whole_digest(route, requested, first, last, client, alice, stored):
    response = client.get(stored[route], headers={**alice, "Range": requested})
    assert response.status_code == 206
    assert response.content == DATA[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-content-sha256"] == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("route", ["artifact", "file"])
def test_a_range_past_the_end_is_416_in_the_error_shape_with_the_size(route, client, alice, stored):
    response = client.get(stored[route], headers={**alice, "Range": "bytes=10240-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10240"
    assert response.json() == error(
        "range_not_satisfiable", "the range 'bytes=10240-' starts past the end of the content (10240 bytes)", "Range"
    )


@pytest.mark.parametrize("requested", ["pages=0-1", "bytes=9-2", "bytes=x-y", "vdOU"])
@pytest.mark.parametrize("route", ["artifact", "file"])
def test_a_header_that_is_no_range_is_ignored_and_gets_the_whole_content(requested, route, client, alice, stored):
    """RFC 9110 (14.2) lets a server ignore an invalid Range, as nginx does: the answer is the whole content, 200,
    without Content-Range, so a client sees that no range was applied."""
    response = client.get(stored[route], headers={**alice, "Range": requested})
    assert response.status_code == 200 and response.content == DATA
    assert "content-range" not in response.headers


def test_several_ranges_get_the_whole_content_as_one_binary_body(client, alice, stored):
    """Not multipart/byteranges, which the document does not declare: RFC 9110 lets a server ignore Range."""
    response = client.get(stored["artifact"], headers={**alice, "Range": "bytes=0-9, 20-29"})
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-type"] == "application/octet-stream"


def test_if_range_naming_another_version_gets_the_whole_content(client, alice, stored):
    etag = client.get(stored["artifact"], headers=alice).headers["etag"]
    same = client.get(stored["artifact"], headers={**alice, "Range": "bytes=0-9", "If-Range": etag})
    assert (same.status_code, same.content) == (206, DATA[:10])
    other = client.get(stored["artifact"], headers={**alice, "Range": "bytes=99999-", "If-Range": '"another"'})
    assert (other.status_code, other.content) == (200, DATA)  # the range is not even looked at


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", "/v1/files", "GET, POST"),
        ("post", "/v1/files/file_x", "DELETE, GET"),
        ("delete", "/v1/jobs", "GET, POST"),
        ("get", "/v1/jobs/job_x/cancel", "POST"),
        ("get", "/v1/estimate", "POST"),
    ],
)
def test_a_wrong_method_is_405_and_allow_names_every_method_of_the_path(method, path, allowed, client, alice):
    response = client.request(method.upper(), path, headers=alice)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == error("method_not_allowed", "Method Not Allowed", None)


def test_an_empty_cursor_is_the_first_page(client, alice, train_file):
    jobs = [create_job_ok(client, alice, train_file["id"])["id"] for _ in range(2)]
    first = client.get("/v1/jobs", headers=alice, params={"after": "", "limit": 1})
    assert first.status_code == 200
    assert [j["id"] for j in first.json()["data"]] == [jobs[-1]]  # newest first, as with no cursor
    files = client.get("/v1/files", headers=alice, params={"after": ""}).json()
    assert [f["id"] for f in files["data"]] == [train_file["id"]]
    events = client.get(f"/v1/jobs/{jobs[0]}/events", headers=alice, params={"after": ""}).json()
    assert [e["message"] for e in events["data"]] == ["job queued"]


@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/jobs"])
def test_a_json_body_that_is_not_utf8_is_422_in_the_error_shape(path, client, alice):
    body = b'{"recipe": {"task": {"type": "language_model\xff"}}}'  # Latin-1 bytes: not UTF-8
    response = client.post(path, headers={**alice, "Content-Type": "application/json"}, content=body)
    assert response.status_code == 422
    at = body.index(b"\xff")
    assert response.json() == error(
        "invalid_request", f"the request body is not UTF-8 JSON (invalid start byte at byte {at})", None
    )
    valid = client.post("/v1/estimate", headers=alice, json={"recipe": lm_recipe()})
    assert valid.status_code == 200  # the same route with a UTF-8 body


def test_a_json_body_too_deep_to_parse_is_a_declared_400_in_the_error_shape(client, alice):
    """Python's parser gives up on deep nesting (RecursionError); FastAPI answers 400, which both routes declare."""
    body = b'{"recipe": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = client.post("/v1/estimate", headers={**alice, "Content-Type": "application/json"}, content=body)
    assert response.status_code == 400
    assert response.json() == error("bad_request", "There was an error parsing the body", None)
