"""Bearer API keys: missing, malformed, unknown and revoked keys are 401; keys are stored only as HMACs."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.tables import ApiKey, utcnow
from tests.helpers.api import SECRET, error, lm_recipe, new_key

# every /v1 route, with a body it would accept, so that only the missing or bad key can be the reason for the 401
ROUTES = [
    ("GET", "/v1/files", None),
    ("POST", "/v1/files", None),
    ("GET", "/v1/files/file_x", None),
    ("GET", "/v1/files/file_x/content", None),
    ("DELETE", "/v1/files/file_x", None),
    ("GET", "/v1/jobs", None),
    ("POST", "/v1/jobs", {"recipe": lm_recipe(), "files": {"train": "file_x"}}),
    ("GET", "/v1/jobs/job_x", None),
    ("GET", "/v1/jobs/job_x/events", None),
    ("POST", "/v1/jobs/job_x/cancel", None),
    ("GET", "/v1/jobs/job_x/artifacts", None),
    ("GET", "/v1/artifacts/art_x", None),
    ("GET", "/v1/artifacts/art_x/content", None),
    ("POST", "/v1/estimate", {"recipe": lm_recipe()}),
]
MISSING = error("missing_api_key", "send your API key as 'Authorization: Bearer sk_...'", None)
MALFORMED = error("invalid_api_key", "the Authorization header must be 'Bearer sk_...'", None)
INVALID = error("invalid_api_key", "invalid API key", None)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_v1_route_needs_a_key(method, path, body, client):
    response = client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.json() == MISSING


def test_an_unauthenticated_request_learns_nothing_about_its_body(client):
    response = client.post("/v1/jobs", json={"recipe": {"model": {"hidden_size": 0}}})
    assert response.status_code == 401
    assert response.json() == MISSING


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic dXNlcjpwYXNz", MALFORMED),
        ("Bearer", MALFORMED),
        ("Bearer    ", MALFORMED),
        ("sk_abcdef", MALFORMED),
        ("Bearer sk_this-key-was-never-issued", INVALID),
        ("Bearer not-even-prefixed", INVALID),
    ],
)
def test_malformed_and_unknown_keys_are_401(header, expected, client):
    response = client.get("/v1/files", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json() == expected


def test_the_scheme_is_case_insensitive(app, client):
    plain = new_key(app, "alice")
    assert client.get("/v1/files", headers={"Authorization": f"bearer {plain}"}).status_code == 200


@pytest.mark.databases
def test_a_revoked_key_is_401_once_the_key_cache_expires(app, client, sessions):
    """Valid keys are cached for KeyCache.ttl_s (5 s in production) so that busy clients skip an HMAC and a query:
    a revoked key stops working within that window, and a key never seen before is checked at once."""
    from service.auth import KeyCache

    app.state.key_cache = KeyCache(ttl_s=0.3)
    plain = new_key(app, "alice")
    headers = {"Authorization": f"Bearer {plain}"}
    assert client.get("/v1/files", headers=headers).status_code == 200

    with sessions() as session:
        session.query(ApiKey).filter_by(owner="alice").one().revoked_at = utcnow()
        session.commit()
    time.sleep(0.35)
    response = client.get("/v1/files", headers=headers)
    assert response.status_code == 401
    assert response.json() == INVALID


def test_a_key_is_only_valid_under_the_secret_that_issued_it(app, make_app):
    plain = new_key(app, "alice")
    other = make_app(secret_key="another-secret-that-is-also-long-enough-0123")
    with TestClient(other) as client:
        response = client.get("/v1/files", headers={"Authorization": f"Bearer {plain}"})
    assert response.status_code == 401
    assert response.json() == INVALID


@pytest.mark.databases
def test_keys_are_stored_only_as_their_hmac(app, sessions):
    plain = new_key(app, "alice", name="laptop")
    assert plain.startswith("sk_")
    assert len(plain) > 40

    with sessions() as session:
        rows = session.execute(text("select * from api_keys")).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert all(plain not in str(value) for value in row.values()), row
    assert row["key_hash"] == hmac.new(SECRET.encode(), plain.encode(), hashlib.sha256).hexdigest()
    assert row["owner"] == "alice" and row["name"] == "laptop"
    assert plain.startswith(row["prefix"]) and len(row["prefix"]) < 16


def test_two_keys_of_one_owner_see_the_same_files(app, client):
    first = {"Authorization": f"Bearer {new_key(app, 'alice', 'one')}"}
    second = {"Authorization": f"Bearer {new_key(app, 'alice', 'two')}"}
    created = client.post("/v1/files", headers=first, files={"file": ("a.txt", b"a b\n")}, data={"purpose": "lm_text"})
    assert created.status_code == 201
    assert client.get(f"/v1/files/{created.json()['id']}", headers=second).status_code == 200
