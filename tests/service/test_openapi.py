"""The OpenAPI document tells the truth: every route of the API, and the error envelope for every error it answers."""

from __future__ import annotations

import pytest

from compress.spec import recipe_json_schema
from service.errors import error_schema

ISSUE_ROUTES = {
    ("post", "/v1/files"),
    ("get", "/v1/files"),
    ("get", "/v1/files/{file_id}"),
    ("get", "/v1/files/{file_id}/content"),
    ("delete", "/v1/files/{file_id}"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{job_id}"),
    ("get", "/v1/jobs/{job_id}/events"),
    ("post", "/v1/jobs/{job_id}/cancel"),
    ("get", "/v1/jobs/{job_id}/artifacts"),
    ("get", "/v1/artifacts/{artifact_id}/content"),
    ("post", "/v1/estimate"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}
PUBLIC_V1 = {("get", "/v1/schemas/recipe")}  # documentation, served without a key
ENVELOPE_KEYS = ["code", "message", "param"]


@pytest.fixture
def document(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document["components"]["schemas"][name]
    return schema


def is_error_envelope(document: dict, response: dict) -> bool:
    schema = resolve(document, response.get("content", {}).get("application/json", {}).get("schema", {}))
    inner = resolve(document, schema.get("properties", {}).get("error", {}))
    return schema.get("required") == ["error"] and inner.get("required") == ENVELOPE_KEYS


def test_every_route_of_the_issue_is_documented(document):
    documented = {(method, path) for method, path, _ in operations(document)}
    assert ISSUE_ROUTES - documented == set()


def test_every_authenticated_v1_operation_declares_401_with_the_error_envelope(document):
    missing = [
        (method, path)
        for method, path, op in operations(document)
        if path.startswith("/v1")
        and (method, path) not in PUBLIC_V1
        and not is_error_envelope(document, op["responses"].get("401", {}))
    ]
    assert missing == []


def test_the_declared_envelope_is_the_one_the_service_sends(document, client):
    declared = resolve(
        document, document["paths"]["/v1/jobs"]["post"]["responses"]["401"]["content"]["application/json"]["schema"]
    )
    assert declared == error_schema()
    body = client.get("/v1/jobs").json()  # no key: an actual 401
    assert sorted(body) == ["error"] and sorted(body["error"]) == sorted(ENVELOPE_KEYS)


@pytest.mark.parametrize(
    ("method", "path", "status", "errors"),
    [
        ("post", "/v1/files", "201", ["400", "401", "413"]),
        ("get", "/v1/files/{file_id}", "200", ["401", "404"]),
        ("delete", "/v1/files/{file_id}", "200", ["401", "404", "409"]),
        ("post", "/v1/jobs", "201", ["400", "401", "404", "409", "422", "503"]),
        ("post", "/v1/jobs/{job_id}/cancel", "200", ["401", "404", "409"]),
        ("get", "/v1/artifacts/{artifact_id}/content", "200", ["401", "404"]),
        ("post", "/v1/estimate", "200", ["401", "422"]),
    ],
)
def test_each_operation_declares_the_errors_it_answers_with(method, path, status, errors, document):
    responses = document["paths"][path][method]["responses"]
    assert status in responses
    for code in errors:
        assert is_error_envelope(document, responses.get(code, {})), code


def test_every_documented_v1_error_uses_the_error_envelope(document, client):
    wrong = [
        (method, path, code)
        for method, path, op in operations(document)
        if path.startswith("/v1")
        for code, response in op["responses"].items()
        if code.startswith(("4", "5")) and not is_error_envelope(document, response)
    ]
    assert wrong == []


def test_the_upload_documents_its_multipart_form(document):
    form = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["required"]) == {"file", "purpose"}
    assert form["properties"]["purpose"]["enum"] == [
        "lm_text",
        "tagging_conll",
        "trajectories",
        "weights",
        "vocabulary",
    ]


def test_job_creation_documents_the_idempotency_key_header(document):
    parameters = document["paths"]["/v1/jobs"]["post"]["parameters"]
    assert any(p["in"] == "header" and p["name"].lower() == "idempotency-key" for p in parameters)


def test_the_recipe_schema_is_served_without_a_key(client):
    response = client.get("/v1/schemas/recipe")
    assert response.status_code == 200
    assert response.json() == recipe_json_schema()
