"""The OpenAPI document tells the truth, in a form client generators can use: every route, every status with its body,
one error component, the recipe's schema as components, enums, short operation ids, tags per resource; and it is the
checked-in snapshot ``openapi.json`` (regenerated with ``make openapi``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from openapi_spec_validator import validate

from compress import tasks
from compress.spec import Recipe, recipe_json_schema
from service.openapi import REGENERATE, TAGS, render
from service.openapi import document as build_document
from service.tables import JOB_STATUSES
from tests.helpers.api import lm_recipe
from workers.execute import ARTIFACT_KINDS

SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi.json"
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
PUBLIC = {("get", "/v1/schemas/recipe"), ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
ERROR_REF = "#/components/schemas/ErrorResponse"
RECIPE_REF = "#/components/schemas/Recipe"
CONTENT_ROUTES = ["/v1/files/{file_id}/content", "/v1/artifacts/{artifact_id}/content"]


@pytest.fixture(scope="module")
def document() -> dict:
    """Built once for the module (it depends on no setting); the snapshot test checks that an app serves it."""
    return build_document()


def operations(document: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def json_schema_of(document: dict, schema: dict) -> dict:
    """``schema`` as a standalone JSON Schema: the document's components become its ``$defs``."""
    text = json.dumps({**schema, "$defs": document["components"]["schemas"]})
    return json.loads(text.replace('"#/components/schemas/', '"#/$defs/'))


def body_schema(document: dict, method: str, path: str, status: str) -> dict:
    return document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


# -- the document as a whole ----------------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on the first violation of the OpenAPI 3.1 schema, or an unresolved $ref


def test_the_checked_in_snapshot_is_the_served_document(client, document):
    """The API changes only with its document reviewed: a change to a route or a schema shows up in openapi.json."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == document
    assert SNAPSHOT.exists(), f"openapi.json is missing: run `{REGENERATE}`"
    if SNAPSHOT.read_text() != render(response.json()):
        pytest.fail(f"openapi.json differs from the API's document: review the change and run `{REGENERATE}`")


def test_the_regeneration_command_writes_the_snapshot_without_importing_torch(tmp_path):
    """What `make openapi` runs (service.openapi's main), in a fresh process: the API process never imports torch."""
    written = tmp_path / "openapi.json"
    code = "import sys; from service.openapi import main; main([sys.argv[1]]); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code, str(written)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert written.read_text() == SNAPSHOT.read_text()


def test_every_route_of_the_issue_is_documented(document):
    documented = {(method, path) for method, path, _ in operations(document)}
    assert ISSUE_ROUTES - documented == set()


def test_operation_ids_are_short_camel_case_verbs_and_unique(document):
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    verbs = ("upload", "list", "get", "delete", "download", "create", "cancel", "estimate")
    assert [i for i in ids if not (re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", i) and i.startswith(verbs))] == []
    assert {"uploadFile", "createJob", "getJob", "listJobs", "downloadArtifact", "estimateRecipe"} <= set(ids)


def test_each_operation_has_one_tag_named_after_its_resource(document):
    declared = [tag["name"] for tag in document["tags"]]
    assert declared == [tag["name"] for tag in TAGS] == ["files", "jobs", "sweeps", "artifacts", "estimate", "system"]
    tags = {(method, path): op["tags"] for method, path, op in operations(document)}
    assert all(len(t) == 1 and t[0] in declared for t in tags.values())
    assert tags[("get", "/v1/artifacts/{artifact_id}/content")] == ["artifacts"]
    assert tags[("get", "/v1/jobs/{job_id}/artifacts")] == ["artifacts"]
    assert tags[("post", "/v1/estimate")] == ["estimate"]
    assert tags[("get", "/readyz")] == tags[("get", "/healthz")] == ["system"]
    assert {t[0] for (_, path), t in tags.items() if path.startswith("/v1/files")} == {"files"}


def test_no_framework_schema_is_left_in_the_document(document):
    """FastAPI's ``{"detail": ...}`` validation error is never sent, and generic names make poor client classes."""
    names = set(document["components"]["schemas"])
    assert not names & {"HTTPValidationError", "ValidationError"}
    assert [n for n in names if "_" in n or n.endswith(("-Input", "-Output"))] == []


# -- errors ---------------------------------------------------------------------------------------------------------


def test_every_error_response_refers_to_the_one_error_component(document):
    wrong = [
        (method, path, status)
        for method, path, op in operations(document)
        for status, response in op["responses"].items()
        if status.startswith(("4", "5"))
        and (method, path) != ("get", "/readyz")
        and response.get("content", {}).get("application/json", {}).get("schema") != {"$ref": ERROR_REF}
    ]
    assert wrong == []


def test_every_authenticated_operation_declares_401(document):
    missing = [
        (method, path)
        for method, path, op in operations(document)
        if (method, path) not in PUBLIC and "401" not in op["responses"]
    ]
    assert missing == []
    assert all("security" in op for method, path, op in operations(document) if (method, path) not in PUBLIC)


def test_the_declared_error_component_is_the_body_the_service_sends(document, client):
    schema = json_schema_of(document, {"$ref": ERROR_REF})
    unauthorized = client.get("/v1/jobs").json()
    jsonschema.validate(unauthorized, schema)
    assert unauthorized["error"]["code"] == "missing_api_key"
    with pytest.raises(jsonschema.ValidationError):  # the schema can fail: a body without param is not an error
        jsonschema.validate({"error": {"code": "x", "message": "y"}}, schema)


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/v1/files", ["201", "400", "401", "413", "422", "429"]),
        ("get", "/v1/files", ["200", "401", "404", "422"]),
        ("get", "/v1/files/{file_id}", ["200", "401", "404"]),
        ("delete", "/v1/files/{file_id}", ["200", "401", "404", "409"]),
        ("post", "/v1/jobs", ["200", "201", "400", "401", "404", "409", "422", "429", "503"]),
        ("get", "/v1/jobs/{job_id}/events", ["200", "401", "404", "422"]),
        ("post", "/v1/jobs/{job_id}/cancel", ["200", "401", "404", "409"]),
        ("get", "/v1/artifacts/{artifact_id}/content", ["200", "206", "401", "404", "416"]),
        ("get", "/v1/files/{file_id}/content", ["200", "206", "401", "404", "416"]),
        ("post", "/v1/estimate", ["200", "400", "401", "422", "429"]),
        ("get", "/readyz", ["200", "503"]),
    ],
)
def test_each_operation_declares_every_status_it_answers_with(method, path, statuses, document):
    assert set(statuses) <= set(document["paths"][path][method]["responses"])


def test_rate_limited_operations_declare_429_with_retry_after(document):
    for path in ("/v1/jobs", "/v1/files", "/v1/estimate"):
        response = document["paths"][path]["post"]["responses"]["429"]
        assert response["headers"]["Retry-After"]["schema"]["type"] == "integer"
        assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}


# -- bodies ---------------------------------------------------------------------------------------------------------


def test_job_creation_declares_the_replay_200_and_the_created_201_with_the_job(document):
    responses = document["paths"]["/v1/jobs"]["post"]["responses"]
    job = {"$ref": "#/components/schemas/JobObject"}
    assert responses["200"]["content"]["application/json"]["schema"] == job
    assert responses["201"]["content"]["application/json"]["schema"] == job
    parameters = document["paths"]["/v1/jobs"]["post"]["parameters"]
    assert any(p["in"] == "header" and p["name"].lower() == "idempotency-key" for p in parameters)


@pytest.mark.parametrize("path", CONTENT_ROUTES)
def test_downloads_declare_binary_bodies_the_digest_header_and_the_range_parameter(path, document):
    operation = document["paths"][path]["get"]
    (ranged,) = [p for p in operation["parameters"] if p["in"] == "header" and p["name"] == "Range"]
    assert ranged["required"] is False
    for status in ("200", "206"):
        response = operation["responses"][status]
        assert response["content"] == {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        assert "X-Content-SHA256" in response["headers"]
    assert "Content-Range" in operation["responses"]["206"]["headers"]
    assert "Content-Range" in operation["responses"]["416"]["headers"]


def test_the_upload_documents_its_multipart_form_with_the_purpose_enum(document):
    form = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["required"]) == {"file", "purpose"}
    assert form["properties"]["file"] == {"type": "string", "format": "binary"}
    assert form["properties"]["purpose"] == {"$ref": "#/components/schemas/FilePurpose"}


def test_statuses_purposes_and_kinds_are_enums_of_the_values_the_service_writes(document):
    schemas = document["components"]["schemas"]
    assert schemas["JobStatus"]["enum"] == list(JOB_STATUSES)
    assert schemas["FilePurpose"]["enum"] == list(tasks.purposes())
    assert set(schemas["ArtifactKind"]["enum"]) == {*ARTIFACT_KINDS.values(), "file"}  # the worker's, and its fallback
    assert schemas["JobObject"]["properties"]["status"] == {"$ref": "#/components/schemas/JobStatus"}
    assert schemas["FileObject"]["properties"]["purpose"] == {"$ref": "#/components/schemas/FilePurpose"}
    assert schemas["FileObject"]["properties"]["status"] == {"$ref": "#/components/schemas/FileStatus"}
    assert schemas["ArtifactObject"]["properties"]["kind"] == {"$ref": "#/components/schemas/ArtifactKind"}
    (status,) = [p for p in document["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "status"]
    assert {"$ref": "#/components/schemas/JobStatus"} in status["schema"]["anyOf"]  # the filter: the same enum


def test_the_job_keeps_its_warnings_and_live_progress_typed(document):
    job = document["components"]["schemas"]["JobObject"]["properties"]
    assert job["warnings"]["items"] == {"$ref": "#/components/schemas/JobWarning"}
    assert {"$ref": "#/components/schemas/JobLive"} in job["live"]["anyOf"]


def test_lists_are_named_per_resource(document):
    for path, name in [("/v1/files", "FileList"), ("/v1/jobs", "JobList"), ("/v1/jobs/{job_id}/events", "EventList")]:
        assert body_schema(document, "get", path, "200") == {"$ref": f"#/components/schemas/{name}"}
    schema = body_schema(document, "get", "/v1/jobs/{job_id}/artifacts", "200")
    assert schema == {"$ref": "#/components/schemas/ArtifactList"}


def test_health_and_readiness_declare_their_bodies_the_503_too(document, make_app):
    from fastapi.testclient import TestClient

    readiness = {"$ref": "#/components/schemas/Readiness"}
    assert body_schema(document, "get", "/readyz", "200") == readiness
    assert body_schema(document, "get", "/readyz", "503") == readiness
    assert body_schema(document, "get", "/healthz", "200") == {"$ref": "#/components/schemas/Health"}

    class Unreachable:
        def ping(self) -> bool:
            return False

    with TestClient(make_app(queue=Unreachable())) as down:
        response = down.get("/readyz")
    assert response.status_code == 503
    jsonschema.validate(response.json(), json_schema_of(document, readiness))
    assert response.json()["checks"] == {"database": True, "broker": False}


# -- the recipe -----------------------------------------------------------------------------------------------------


def test_the_recipe_is_a_component_referred_to_by_job_creation_the_estimate_and_the_job(document):
    schemas = document["components"]["schemas"]
    for name in ("JobCreate", "EstimateRequest", "JobObject"):
        assert schemas[name]["properties"]["recipe"]["$ref"] == RECIPE_REF, name
    assert schemas["Recipe"]["properties"]["method"]["discriminator"]["propertyName"] == "type"
    nested = {ref for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(schemas["Recipe"]))}
    assert {"ModelSpec", "TrainingSpec", "PredefinedMethod", "LanguageModelTask"} <= nested <= set(schemas)


RECIPES = [
    lm_recipe(),
    {**lm_recipe(), "training": {"epochs": 0}},
    {**lm_recipe(), "method": {"type": "pruning"}},
    {**lm_recipe(), "model": {"cell": "lstm", "embedding_size": 16, "hidden_size": 16, "layers": 2}},
    {"task": {"type": "adding"}, "model": {"hidden_size": 8}, "method": {"type": "dense"}},
    {"task": {"type": "adding"}, "method": {"type": "dense"}},
]


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_recipe_component_accepts_what_the_recipe_model_accepts(recipe, document):
    """Checked by a second validator (jsonschema, over the document's components) against pydantic's verdict; these
    recipes break only field rules, which a schema can state (cross-field checks are the service's)."""
    try:
        Recipe.model_validate(recipe)
        valid = True
    except ValueError:
        valid = False
    errors = list(jsonschema.Draft202012Validator(json_schema_of(document, {"$ref": RECIPE_REF})).iter_errors(recipe))
    assert (errors == []) == valid, errors


def test_the_recipe_schema_route_declares_what_it_returns(document, client):
    assert body_schema(document, "get", "/v1/schemas/recipe", "200") == {"$ref": "#/components/schemas/RecipeSchema"}
    served = client.get("/v1/schemas/recipe").json()
    assert served == recipe_json_schema()
    jsonschema.validate(served, json_schema_of(document, {"$ref": "#/components/schemas/RecipeSchema"}))
    # ...and it is the Recipe component with its definitions inline
    component = json.dumps(document["components"]["schemas"]["Recipe"]).replace("#/components/schemas/", "#/$defs/")
    assert json.loads(component) == {k: v for k, v in served.items() if k != "$defs"}
    assert set(served["$defs"]) <= set(document["components"]["schemas"])


# -- the answers the service actually gives ---------------------------------------------------------------------------


def test_every_answer_is_a_declared_status_with_a_body_of_the_declared_schema(
    document, client, alice, sessions, store, train_file, lm_bytes
):
    """Each operation driven to its statuses (those this app can be brought to without a fault: 429 and 503 are
    not), and every answer checked against the document: the status is declared, the content type is the declared
    one, a JSON body validates against the declared schema (jsonschema over the document's components)."""
    from service.tables import Job
    from tests.helpers.api import LIMIT, add_artifact, create_job_ok, upload, upload_ok

    spare = upload_ok(client, alice, b"a spare file\n")
    job = create_job_ok(client, alice, train_file["id"], key="contract")
    finished = create_job_ok(client, alice, train_file["id"])
    with sessions() as session:
        session.get(Job, finished["id"]).status = "succeeded"
        session.commit()
    artifact = add_artifact(sessions, store, job["id"], "alice", bytes(range(256)))
    body, keyed = {"recipe": lm_recipe(), "files": {}}, {**alice, "Idempotency-Key": "contract"}
    as_json = {**alice, "Content-Type": "application/json"}

    def ask(method: str, template: str, path: str | None = None, *, headers=alice, **kwargs):
        return method, template, client.request(method.upper(), path or template, headers=headers, **kwargs)

    def ranged(template: str, path: str, byte_range: str):
        return ask("get", template, path, headers={**alice, "Range": byte_range})

    file_ = ("/v1/files/{file_id}", f"/v1/files/{train_file['id']}")
    spare_content = ("/v1/files/{file_id}/content", f"/v1/files/{spare['id']}/content")
    art_content = ("/v1/artifacts/{artifact_id}/content", f"/v1/artifacts/{artifact}/content")
    job_ = "/v1/jobs/{job_id}"
    answers = [
        ("post", "/v1/files", upload(client, alice, lm_bytes)),
        ("post", "/v1/files", upload(client, {}, lm_bytes)),
        ("post", "/v1/files", upload(client, alice, b"x" * (LIMIT + 1))),
        ask("post", "/v1/files", content=b"not a form"),
        ask("get", "/v1/files", params={"limit": 1}),
        ask("get", "/v1/files", params={"after": "file_nope"}),
        ask("get", "/v1/files", params={"after": "file_" + "0" * 24}),
        ask("get", "/v1/files", params={"limit": 0}),
        ask("get", "/v1/files", params={"purpose": "poetry"}),
        ask("get", *file_),
        ask("get", file_[0], "/v1/files/file_nope"),
        ask("get", file_[0] + "/content", file_[1] + "/content"),
        ranged(*spare_content, "bytes=2-5"),
        ranged(*spare_content, "bytes=99-"),
        ranged(*spare_content, "lines=1"),
        ask("delete", *file_),  # a queued job uses it: 409
        ask("delete", file_[0], f"/v1/files/{spare['id']}"),
        ask("delete", file_[0], f"/v1/files/{spare['id']}"),
        ask("post", "/v1/jobs", headers=keyed, json={"recipe": job["recipe"], "files": job["files"]}),
        ask("post", "/v1/jobs", headers=keyed, json=body),
        ask("post", "/v1/jobs", json={**body, "files": job["files"]}),
        ask("post", "/v1/jobs", json=body),
        ask("post", "/v1/jobs", json={**body, "files": {"train": "file_nope"}}),
        ask("post", "/v1/jobs", json={**body, "recipe": {"task": {}}}),
        ask("post", "/v1/jobs", headers=as_json, content=b"{"),
        ask("get", "/v1/jobs", params={"status": "queued"}),
        ask("get", "/v1/jobs", params={"status": "sleeping"}),
        ask("get", job_, f"/v1/jobs/{job['id']}"),
        ask("get", job_, "/v1/jobs/job_nope"),
        ask("get", job_ + "/events", f"/v1/jobs/{job['id']}/events"),
        ask("get", job_ + "/events", f"/v1/jobs/{job['id']}/events", params={"after": "x"}),
        ask("get", job_ + "/events", "/v1/jobs/job_nope/events"),
        ask("post", job_ + "/cancel", f"/v1/jobs/{job['id']}/cancel"),
        ask("post", job_ + "/cancel", f"/v1/jobs/{finished['id']}/cancel"),
        ask("post", job_ + "/cancel", "/v1/jobs/job_nope/cancel"),
        ask("get", job_ + "/artifacts", f"/v1/jobs/{job['id']}/artifacts"),
        ask("get", job_ + "/artifacts", "/v1/jobs/job_nope/artifacts"),
        ask("get", "/v1/artifacts/{artifact_id}", f"/v1/artifacts/{artifact}"),
        ask("get", "/v1/artifacts/{artifact_id}", "/v1/artifacts/art_nope"),
        ask("get", *art_content),
        ranged(*art_content, "bytes=-3"),
        ranged(*art_content, "bytes=256-"),
        ask("post", "/v1/estimate", json={"recipe": lm_recipe()}),
        ask("post", "/v1/estimate", json={"recipe": {"task": {}}}),
        ask("post", "/v1/estimate", headers=as_json, content=b'{"recipe": "\xff"}'),
        ask("get", "/healthz", headers={}),
        ask("get", "/readyz", headers={}),
        ask("get", "/metrics", headers={}),
        ask("get", "/v1/schemas/recipe", headers={}),
    ]
    seen = set()
    for method, path, response in answers:
        where = f"{method.upper()} {path} -> {response.status_code}"
        declared = document["paths"][path][method]["responses"].get(str(response.status_code))
        assert declared is not None, f"{where}: not declared"
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in declared["content"], f"{where}: {media_type} not declared"
        if media_type == "application/json":
            schema = json_schema_of(document, declared["content"][media_type]["schema"])
            jsonschema.validate(response.json(), schema)
        seen.add((method, path, response.status_code))
    expected = {
        "/v1/files": {201, 400, 401, 413, 200, 404, 422},
        "/v1/files/{file_id}/content": {200, 206, 416},  # a header that is no range is ignored: 200
        "/v1/files/{file_id}": {200, 404, 409},
        "/v1/jobs": {200, 201, 400, 404, 409, 422},
        "/v1/jobs/{job_id}/cancel": {200, 404, 409},
        "/v1/artifacts/{artifact_id}/content": {200, 206, 416},
        "/v1/estimate": {200, 422},
    }
    for path, statuses in expected.items():
        assert statuses <= {status for _, p, status in seen if p == path}, path
