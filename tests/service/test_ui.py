"""The dashboard's pages over HTTP (the browser tests are tests/system/test_dashboard.py): signing in, the same
ownership rules as the API, the estimate before a job is created, and what the pages make of a job's metrics and
live progress report."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.schemas import JobObject
from service.tables import Job
from service.ui import views
from tests.helpers.api import LIMIT, create_job_ok, lm_recipe, new_key

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def browser_for(app) -> Iterator:
    """browser_for(owner) -> a TestClient signed in to the dashboard with a fresh key of ``owner`` (its own cookies)."""
    clients = []

    def sign_in(owner: str) -> TestClient:
        client = TestClient(app, follow_redirects=False)
        clients.append(client)
        response = client.post("/ui/signin", data={"api_key": new_key(app, owner)})
        assert response.status_code == 303 and response.headers["location"] == "/ui/jobs"
        return client

    yield sign_in
    for client in clients:
        client.close()


def test_the_dashboard_is_behind_a_sign_in_and_keeps_the_key_in_a_session_cookie(app, alice):
    anonymous = TestClient(app, follow_redirects=False)
    assert anonymous.get("/").headers["location"] == "/ui/jobs"
    for page in ("/ui/jobs", "/ui/files", "/ui/jobs/new", "/ui/jobs/job_x"):
        response = anonymous.get(page)
        assert (response.status_code, response.headers["location"]) == (303, "/ui/signin"), page

    wrong = anonymous.post("/ui/signin", data={"api_key": "sk_wrong-key-000000000000000000"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert "set-cookie" not in wrong.headers

    key = alice["Authorization"].removeprefix("Bearer ")
    signed = anonymous.post("/ui/signin", data={"api_key": key})
    assert signed.status_code == 303 and key not in signed.headers["location"]
    attributes = [part.strip().lower() for part in signed.headers["set-cookie"].split(";")]
    assert attributes[0] == f"sparseq_session={key}".lower()
    assert {"httponly", "path=/ui", "samesite=strict"} <= set(attributes)
    assert not [a for a in attributes if a.startswith(("max-age", "expires"))]  # forgotten with the browser session
    assert anonymous.get("/ui/jobs").status_code == 200

    out = anonymous.post("/ui/signout")
    assert out.headers["location"] == "/ui/signin" and 'sparseq_session=""' in out.headers["set-cookie"]
    anonymous.cookies.clear()  # as the browser does on that Set-Cookie (TestClient's jar ignores the past expiry)
    assert anonymous.get("/ui/jobs").headers["location"] == "/ui/signin"


def test_a_key_sees_only_its_owners_jobs_and_files(client, alice, train_file, browser_for):
    job = create_job_ok(client, alice, train_file["id"])
    ours, theirs = browser_for("alice"), browser_for("bob")

    assert job["id"] in ours.get("/ui/jobs").text and train_file["id"] in ours.get("/ui/files").text
    assert job["id"] not in theirs.get("/ui/jobs").text and "No jobs yet" in theirs.get("/ui/jobs").text
    assert train_file["id"] not in theirs.get("/ui/files").text
    assert train_file["id"] not in theirs.get("/ui/jobs/new").text  # not offered for a job either
    for page in (f"/ui/jobs/{job['id']}", f"/ui/jobs/{job['id']}/live"):
        response = theirs.get(page)
        assert response.status_code == 404 and "Not found" in response.text, page
    assert theirs.post(f"/ui/jobs/{job['id']}/cancel").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] == "queued"  # untouched

    # bob's job from alice's file is refused as the API refuses it
    form = {"recipe": json.dumps(lm_recipe()), "train": train_file["id"], "action": "estimate"}
    estimated = theirs.post("/ui/jobs/new", data=form)
    digest = re.search(r'name="estimated" value="(\w+)"', estimated.text).group(1)
    refused = theirs.post("/ui/jobs/new", data={**form, "action": "create", "estimated": digest})
    assert refused.status_code == 404 and f"no file {train_file['id']!r}" in html.unescape(refused.text)


def test_a_job_is_created_only_after_its_recipe_was_estimated(client, alice, train_file, browser_for):
    ours = browser_for("alice")
    recipe = "# YAML, as a person writes it\n" + "\n".join(
        f"{part}: {json.dumps(value)}" for part, value in lm_recipe().items()
    )
    form = {"recipe": recipe, "train": train_file["id"], "idempotency_key": "form-1"}

    eager = ours.post("/ui/jobs/new", data={**form, "action": "create"})  # no estimate yet: shown, not created
    assert eager.status_code == 200 and 'id="estimate"' in eager.text
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []

    expected = client.post("/v1/estimate", headers=alice, json={"recipe": lm_recipe()}).json()
    for field in ("parameters", "nonzero_parameters", "flops_per_token", "flops_per_step"):
        assert f"{expected[field]:,}" in eager.text, field

    digest = re.search(r'name="estimated" value="(\w+)"', eager.text).group(1)
    changed = ours.post(
        "/ui/jobs/new", data={**form, "recipe": recipe + "\n# edited", "action": "create", "estimated": digest}
    )
    assert changed.status_code == 200 and "changed since the estimate" in changed.text
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []

    created = ours.post("/ui/jobs/new", data={**form, "action": "create", "estimated": digest})
    assert created.status_code == 303
    job_id = created.headers["location"].removeprefix("/ui/jobs/")
    job = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
    assert job["files"] == {"train": train_file["id"]} and job["recipe"]["model"]["hidden_size"] == 16
    again = ours.post("/ui/jobs/new", data={**form, "action": "create", "estimated": digest})  # a double click
    assert again.headers["location"] == created.headers["location"]
    assert len(client.get("/v1/jobs", headers=alice).json()["data"]) == 1


def test_recipe_errors_are_shown_on_the_form_naming_the_field(browser_for):
    ours = browser_for("alice")
    bad_yaml = ours.post("/ui/jobs/new", data={"recipe": "task: [unclosed", "action": "estimate"})
    assert bad_yaml.status_code == 400 and "neither YAML nor JSON (line 1" in bad_yaml.text
    bad_field = ours.post("/ui/jobs/new", data={"recipe": json.dumps(lm_recipe(**{"model.hidden_size": 0}))})
    assert bad_field.status_code == 422
    assert "recipe.model.hidden_size" in bad_field.text and "greater than or equal to 1" in bad_field.text
    assert 'id="create-button"' not in bad_field.text
    assert "Traceback" not in bad_field.text


def test_the_pages_show_the_result_against_its_reference_and_the_live_report(
    app, client, alice, train_file, browser_for
):
    job = create_job_ok(client, alice, train_file["id"])
    with app.state.sessions() as session:
        row = session.get(Job, job["id"])
        row.status, row.progress = "running", 0.3
        row.metrics = {"name": "valid_perplexity", "value": 150.0, "reference": 120.0, "ratio": 1.25}
        row.metrics |= {"lower_is_better": True, "sparsity": 0.9}
        row.warnings = [{"code": "tensor_at_floor", "message": "kept its floor", "tensor": "rnn.weight_hh_l0"}]
        row.live = {"phase": "prune", "step": 30, "total_steps": 100, "loss": 4.25, "eta_s": 65}
        session.commit()
    ours = browser_for("alice")

    listed = ours.get("/ui/jobs?status=running").text
    row_html = re.search(rf'<tr data-job="{job["id"]}">(.*?)</tr>', listed, re.S).group(1)
    text = " ".join(re.sub(r"<[^>]+>", " ", row_html).split())
    # 150 against 120 where lower is better: 1.25 times the reference, and worse
    assert "valid_perplexity 150 vs 120 ×1.25" in text and 'class="ratio worse"' in row_html
    assert "running" in text and "30.0%" in text and "90.0%" in text
    assert re.search(r'data-label="Warnings"><span class="warn-count">1<', row_html)
    assert 'data-refresh="3"' in listed  # a list with an unfinished job refreshes itself
    finished = ours.get("/ui/jobs?status=succeeded").text
    assert job["id"] not in finished and "data-refresh" not in finished
    assert ours.get("/ui/jobs?status=nonsense").status_code == 400

    live = " ".join(re.sub(r"<[^>]+>", " ", ours.get(f"/ui/jobs/{job['id']}/live").text).split())
    assert "Phase prune" in live and "Step 30 / 100" in live and "Loss 4.25" in live and "Time left 1 min 05 s" in live
    page = ours.get(f"/ui/jobs/{job['id']}").text
    assert "tensor_at_floor" in page and "rnn.weight_hh_l0" in page and 'id="cancel"' in page

    cancelled = ours.post(f"/ui/jobs/{job['id']}/cancel")
    assert cancelled.headers["location"] == f"/ui/jobs/{job['id']}"
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] == "cancelling"


def test_the_ratio_is_coloured_by_the_jobs_quality_tolerance_not_by_any_difference(
    app, client, alice, train_file, browser_for
):
    # The verdicts a job carries (compress.pipeline.judge, tolerance 1.25): 1.683x is beyond it, 1.227x and 1.163x
    # are worse than the reference but within it, 0.95x is better; an accuracy (higher is better) at 0.7x is beyond.
    cases = {
        (202.0, 120.0, True, False): "worse",
        (147.2, 120.0, True, True): "within",
        (139.6, 120.0, True, True): "within",
        (114.0, 120.0, True, True): "better",
        (0.56, 0.8, False, False): "worse",
    }
    ids = {}
    for (value, reference, lower, within), tone in cases.items():
        job = create_job_ok(client, alice, train_file["id"])
        with app.state.sessions() as session:
            row = session.get(Job, job["id"])
            row.status, row.progress = "succeeded", 1.0
            row.metrics = {"name": "m", "value": value, "reference": reference, "ratio": value / reference}
            row.metrics |= {"lower_is_better": lower, "within_tolerance": within, "reference_kind": "dense"}
            session.commit()
        ids[job["id"]] = tone
    ours = browser_for("alice")
    listed = ours.get("/ui/jobs").text
    for job_id, tone in ids.items():
        row_html = re.search(rf'<tr data-job="{job_id}">(.*?)</tr>', listed, re.S).group(1)
        (shown,) = re.findall(r'class="ratio ?([a-z]*)"', row_html)
        assert shown == tone, (job_id, row_html)
        page = ours.get(f"/ui/jobs/{job_id}").text
        assert re.findall(r'class="ratio ?([a-z]*)"', page) == [tone]


def test_the_jobs_page_says_where_sweeps_are(client, alice, browser_for):
    from sparseq.cli import parser

    page = browser_for("alice").get("/ui/jobs").text
    text = " ".join(re.sub(r"<[^>]+>", "", page).split())
    assert "not a part of sparseq" not in text
    # every way the page names to reach sweeps exists: the API route, the CLI's commands, the SDK's attribute
    assert "/v1/sweeps" in text and client.get("/v1/sweeps", headers=alice).status_code == 200
    named = text.split("sparseq sweeps ", 1)[1].split(", the SDK", 1)[0]  # "create, list, ... and download"
    commands = re.split(r", | and ", named)
    assert {"create", "list", "retrieve", "download"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as shown:
            parser().parse_args(["sweeps", command, "--help"])
        assert shown.value.code == 0, command
    assert "client.sweeps" in text


def test_a_form_posted_from_another_site_is_refused(client, alice, train_file, browser_for):
    job = create_job_ok(client, alice, train_file["id"])
    ours = browser_for("alice")
    forged = ours.post(f"/ui/jobs/{job['id']}/cancel", headers={"Origin": "http://elsewhere.example"})
    assert forged.status_code == 403
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] == "queued"
    same = ours.post(f"/ui/jobs/{job['id']}/cancel", headers={"Origin": "http://testserver"})
    assert same.status_code == 303


def test_pages_for_people_may_load_nothing_from_another_host(client):
    for path in ("/docs", "/redoc", "/ui/signin"):
        policy = client.get(path).headers["content-security-policy"]
        assert "default-src 'self'" in policy and "http" not in policy, path
    assert "content-security-policy" not in client.get("/healthz").headers
    docs = client.get("/docs").text + client.get("/redoc").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs)
    assert assets and [a for a in assets if not a.startswith("/")] == []
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_uploads_from_the_files_page_are_checked_as_the_api_checks_them(client, alice, browser_for, lm_bytes):
    ours = browser_for("alice")
    done = ours.post("/ui/files", files={"file": ("ptb.txt", lm_bytes)}, data={"purpose": "lm_text"})
    (uploaded,) = client.get("/v1/files", headers=alice).json()["data"]
    assert done.headers["location"] == f"/ui/files?uploaded={uploaded['id']}"
    assert uploaded["bytes"] == len(lm_bytes) and uploaded["status"] == "processed"

    # not trajectories: listed as an error that says why, exactly as the API reports it
    ours.post("/ui/files", files={"file": ("paths.npz", b"not an npz")}, data={"purpose": "trajectories"})
    failed = next(f for f in client.get("/v1/files", headers=alice).json()["data"] if f["filename"] == "paths.npz")
    assert failed["status"] == "error"
    assert html.escape(failed["status_details"], quote=False) in ours.get("/ui/files").text

    too_large = ours.post("/ui/files", files={"file": ("big.txt", b"word " * LIMIT)}, data={"purpose": "lm_text"})
    message = re.search(r'class="error" role="alert">([^<]*)<', too_large.text).group(1)
    assert too_large.status_code == 413 and "limit" in message and f"{LIMIT:,}" in message
    assert len(client.get("/v1/files", headers=alice).json()["data"]) == 2


def _job(**fields) -> JobObject:
    base = {"id": "job_x", "status": "succeeded", "recipe": {}, "files": {}, "progress": 1.0, "metrics": {}}
    return JobObject(**{**base, "attempts": 1, "created_at": 0, **fields})


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        # lower is better: 150 against 120 is 1.25 times the reference, worse
        ({"name": "ppl", "value": 150.0, "reference": 120.0, "ratio": 1.25, "lower_is_better": True}, (1.25, True)),
        # higher is better: 0.9 against 0.8 is better; the ratio is computed when the job does not carry one
        ({"name": "acc", "value": 0.9, "reference": 0.8, "lower_is_better": False}, (0.9 / 0.8, False)),
        # no direction: no verdict
        ({"name": "acc", "value": 0.9, "reference": 0.8}, (0.9 / 0.8, None)),
        # no reference: the value alone
        ({"name": "acc", "value": 0.9}, (None, None)),
        # no headline keys: the task's validation metric (not the loss) alone
        ({"valid_loss": 3.2, "valid_perplexity": 25.0, "sparsity": 0.5}, (None, None)),
    ],
)
def test_the_headline_compares_the_result_with_its_reference(metrics, expected):
    shown = views.headline(_job(metrics=metrics))
    ratio, worse = expected
    assert shown["worse"] is worse
    assert shown["ratio"] is None if ratio is None else shown["ratio"] == pytest.approx(ratio)
    assert shown["name"] == metrics.get("name", "valid_perplexity")
    assert views.headline(_job(metrics={"sparsity": 0.5})) is None


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("dense_full", "dense model of full size"),
        ("dense_same_params", "same parameter count"),
        ("initial_weights", "your weights"),
        (None, "the reference"),
    ],
)
def test_the_headline_says_what_its_reference_is(kind, words):
    metrics = {"name": "ppl", "value": 150.0, "reference": 120.0, "lower_is_better": True, "reference_kind": kind}
    assert words in views.headline(_job(metrics=metrics))["reference_words"]


def test_numbers_are_shown_for_people():
    assert [views.percent(v) for v in (0.0, 0.0001, 0.1234, 1.0, None)] == ["0.0%", "<0.1%", "12.3%", "100.0%", "—"]
    assert [views.duration(s) for s in (4.4, 65, 3 * 3600 + 120)] == ["4 s", "1 min 05 s", "3 h 02 min"]
    assert [views.size(b) for b in (999, 65_900, 2_500_000)] == ["999 B", "65.9 kB", "2.5 MB"]
    assert [views.number(v) for v in (14412, 3.91612, 8.7e-5)] == ["14,412", "3.916", "8.700e-05"]


def test_the_new_job_form_starts_from_a_recipe_that_estimates(browser_for):
    ours = browser_for("alice")
    form = ours.get("/ui/jobs/new").text
    recipe = html.unescape(re.search(r'<textarea id="recipe" name="recipe"[^>]*>(.*?)</textarea>', form, re.S).group(1))
    estimated = ours.post("/ui/jobs/new", data={"recipe": recipe, "action": "estimate"})
    assert estimated.status_code == 200 and 'id="create-button"' in estimated.text
