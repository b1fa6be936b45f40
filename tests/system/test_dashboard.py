"""The dashboard and the API docs in a real browser (headless Chromium, no network beyond 127.0.0.1) against a real
``sparseqd serve`` (API, Celery worker, broker): sign in, upload, estimate and create a job, watch it run to the end,
see its pictures and report, cancel another, and a second key that sees nothing of the first's. Every page is saved as
a screenshot at a desktop's and a phone's size (into $SPARSEQ_SCREENSHOTS, else a pytest temporary directory)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.browser import Screenshots, requests_made, require_browser, start_chromium, wait_for
from tests.helpers.processes import LM_RECIPE, TERMINAL, navigation_recipe, process_env, served, sparseqd

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    with served(tmp_path_factory.mktemp("dashboard") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def api(server):
    return server.client()


@pytest.fixture(scope="module")
def browser(server):
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(browser, tmp_path_factory):
    directory = Path(os.environ.get("SPARSEQ_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    return Screenshots(browser, directory)


def text_of(browser, selector: str) -> str:
    return browser.find_element("css selector", selector).text


def fetch_status(browser, url: str) -> list:
    """[status, bytes] of a same-origin fetch from the page (the session cookie goes with it, as for a link)."""
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(async r => done([r.status, (await r.arrayBuffer()).byteLength]));",
        url,
    )


def test_docs_and_redoc_render_with_no_network(server, browser, shots):
    """Every operation of the OpenAPI document appears in the rendered Swagger UI and ReDoc pages, and every asset the
    pages loaded came from the app itself (any other host does not resolve in this browser)."""
    document = json.loads(_get(server, "/openapi.json"))
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    summaries = {op["summary"] for ops in document["paths"].values() for op in ops.values()}
    assert len(operations) >= 15

    browser.get(f"{server.url}/docs")
    wait_for(lambda: len(_swagger_operations(browser)) >= len(operations), what="Swagger UI's operations")
    assert _swagger_operations(browser) == operations
    _only_local_assets(browser, server.url)
    shots("docs", full_page=False)

    browser.get(f"{server.url}/redoc")
    wait_for(lambda: browser.find_elements("css selector", "[data-section-id^='operation/']"), what="ReDoc")
    body = browser.execute_script("return document.body.innerText")
    assert {s for s in summaries if s not in body} == set()
    _only_local_assets(browser, server.url)
    shots("redoc", full_page=False)


def _get(server, path: str) -> str:
    import httpx

    return httpx.get(f"{server.url}{path}").text


def _swagger_operations(browser) -> set[tuple[str, str]]:
    """(method, path) of every operation block Swagger UI rendered (one script: a round trip per element is slow)."""
    found = browser.execute_script(
        "return [...document.querySelectorAll('.opblock')].map(b => ["
        "b.querySelector('.opblock-summary-method').textContent.trim(),"
        "b.querySelector('[data-path]').getAttribute('data-path')])"
    )
    return {tuple(pair) for pair in found}


def _only_local_assets(browser, origin: str) -> None:
    """What the page asked for came from the app; a request for anything else (ReDoc's bundle shows its vendor's logo
    from a CDN) was refused by the browser itself, by the page's Content-Security-Policy, before it left."""
    requests = requests_made(browser)
    assert [r for r in requests if r["url"].startswith(origin)], "the page loaded nothing from the app"
    elsewhere = [r for r in requests if not r["url"].startswith((origin, "data:", "blob:"))]
    assert [r for r in elsewhere if r["blocked_reason"] != "csp"] == []


def test_dashboard_from_sign_in_to_results(server, api, browser, shots, ptb_slices, tmp_path, capsys):
    key = server.key
    visited = []
    phases: list[tuple[str, float]] = []  # where the test's time goes, printed at the end

    def go(path: str) -> None:
        browser.get(f"{server.url}{path}")
        visited.append(browser.current_url)

    # -- sign in: / leads to the sign-in page; the key goes into a session cookie no script can read ------------------
    phases.append(("sign in", time.monotonic()))
    go("/")
    assert browser.current_url == f"{server.url}/ui/signin"
    shots("signin")
    browser.find_element("id", "api_key").send_keys("sk_not-a-real-key-0000000000000000")
    browser.find_element("css selector", "form button[type=submit].primary").click()
    refused = wait_for(lambda: text_of(browser, ".error"), what="the refusal")  # the answer page, once it loaded
    assert "not valid" in refused
    browser.find_element("id", "api_key").send_keys(key)
    browser.find_element("css selector", "form button[type=submit].primary").click()
    wait_for(lambda: browser.current_url == f"{server.url}/ui/jobs", what="the jobs page")
    visited.append(browser.current_url)
    cookie = browser.get_cookie("sparseq_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert "expiry" not in cookie  # a session cookie: gone when the browser session ends
    assert "sparseq_session" not in browser.execute_script("return document.cookie")

    # -- upload a file ------------------------------------------------------------------------------------------------
    phases.append(("upload", time.monotonic()))
    go("/ui/files")
    assert "No files yet" in browser.page_source
    train_path = tmp_path / "ptb.train.txt"
    train_path.write_text(ptb_slices["train"])
    browser.find_element("id", "file").send_keys(str(train_path))
    browser.find_element("id", "upload").click()
    wait_for(lambda: "uploaded=" in browser.current_url, what="the upload")
    visited.append(browser.current_url)
    (uploaded,) = api.http.get("/v1/files").json()["data"]
    assert uploaded["bytes"] == len(ptb_slices["train"].encode()) and uploaded["status"] == "processed"
    row = browser.find_element("css selector", f"tr[data-file='{uploaded['id']}']")
    assert "ptb.train.txt" in row.text and "processed" in row.text and "fresh" in row.get_attribute("class")
    shots("files")

    # -- a job from a recipe: the estimate first (the API's own figures), then create ----------------------------
    phases.append(("create", time.monotonic()))
    recipe = {**LM_RECIPE, "training": {**LM_RECIPE["training"], "epochs": 2}}
    go("/ui/jobs/new")
    assert browser.find_elements("id", "create-button") == []  # nothing to create before an estimate
    browser.execute_script("document.getElementById('recipe').value = arguments[0]", json.dumps(recipe, indent=1))
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "file-train")).select_by_value(uploaded["id"])
    browser.find_element("id", "estimate-button").click()
    estimate_box = wait_for(lambda: browser.find_element("id", "estimate"), what="the estimate")
    expected = api.http.post("/v1/estimate", json={"recipe": recipe}).json()
    for field in ("parameters", "nonzero_parameters", "flops_per_token"):
        assert f"{expected[field]:,}" in estimate_box.text, (field, expected[field], estimate_box.text)
    shots("new-job-estimate")
    browser.find_element("id", "create-button").click()
    match = wait_for(lambda: re.fullmatch(rf"{server.url}/ui/jobs/(job_\w+)", browser.current_url), what="job page")
    visited.append(browser.current_url)
    job_id = match.group(1)
    # A moduli job queued behind it runs while its result is looked at: its page shows the neurons on the torus.
    moduli_job = api.submit(navigation_recipe(steps_per_epoch=3, epochs=2, target_sparsity=0.8))
    job = api.job(job_id)
    assert job["files"] == {"train": uploaded["id"]} and job["recipe"]["model"] == {
        **job["recipe"]["model"],
        **recipe["model"],
    }

    # -- its page follows the job to the end by itself, then shows the result -----------------------------------------
    phases.append(("follow the job", time.monotonic()))
    seen = []

    def finished():
        live = browser.find_element("id", "live")
        seen.append(
            (live.get_attribute("data-status"), float(live.find_element("tag name", "progress").get_attribute("value")))
        )
        return live.get_attribute("data-live") == "no" and browser.find_elements("css selector", ".plots img")

    wait_for(finished, timeout=120, interval=0.2, what="the job to finish on its page")
    assert seen[-1] == ("succeeded", 1.0), seen
    progress = [p for _, p in seen]
    assert progress == sorted(progress), progress  # never goes back
    final = api.job(job_id)
    assert final["status"] == "succeeded"
    pictures = browser.find_elements("css selector", ".plots img")
    wait_for(
        lambda: all(
            browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", p) for p in pictures
        ),
        what="pictures",
    )
    captions = [c.text for c in browser.find_elements("css selector", ".plots figcaption")]
    assert captions[:2] == ["Training curves", "Recurrent weights |W_hh| of each layer (black = zero)"], captions
    assert not [c for c in captions if c.endswith(".png")], captions  # every picture has a caption, not its file name

    artifacts = api.artifacts(job_id)
    report_artifact = next(a for a in artifacts if a["filename"] == "report.json")
    report = json.loads(api.http.get(f"/v1/artifacts/{report_artifact['id']}/content").content)
    rows = browser.find_elements("css selector", "table.tensors tbody tr")
    assert [r.find_element("tag name", "code").text for r in rows] == [t["name"] for t in report["tensors"]]
    for row, tensor in zip(rows, report["tensors"], strict=True):
        cells = [c.text for c in row.find_elements("tag name", "td")]
        assert cells[2:4] == [f"{tensor['numel']:,}", f"{tensor['nnz']:,}"]
        assert cells[4] == f"{100 * tensor['sparsity']:.1f}%"
    # a predefined model's tensors are dense as stored: the page says where its sparsity is counted
    hints = [p.text for p in browser.find_elements("css selector", "p.hint")]
    modules = ", ".join(report["predefined_sparse_modules"])
    assert modules and [h for h in hints if h.startswith(f"Predefined-sparse modules ({modules}) store only")]
    links = browser.find_elements("css selector", "table.artifacts a")
    assert sorted(a.text for a in links) == sorted(a["filename"] for a in artifacts)
    checkpoint = next(a for a in artifacts if a["kind"] == "checkpoint")
    assert fetch_status(browser, f"/ui/artifacts/{checkpoint['id']}/content") == [200, checkpoint["bytes"]]
    assert browser.find_elements("id", "cancel") == []  # nothing to cancel any more
    shots("job-succeeded")

    # -- the moduli job's page: the neurons on the torus as well ------------------------------------------------------
    phases.append(("moduli page", time.monotonic()))
    assert api.wait(moduli_job["id"], timeout=120)["status"] == "succeeded"
    go(f"/ui/jobs/{moduli_job['id']}")
    captions = [c.text for c in browser.find_elements("css selector", ".plots figcaption")]
    assert "Hidden neurons on the moduli space" in captions, captions
    shots("job-moduli")

    # -- cancel another job from its page -----------------------------------------------------------------------------
    phases.append(("cancel", time.monotonic()))
    long_job = api.submit(navigation_recipe(steps_per_epoch=1_000_000, epochs=1))
    api.wait(long_job["id"], timeout=60, until=lambda j: j["status"] == "running" and j["progress"] > 0)
    go(f"/ui/jobs/{long_job['id']}")
    wait_for(lambda: browser.find_element("id", "live").get_attribute("data-status") == "running", what="running")
    shots("job-running")
    browser.find_element("id", "cancel").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: browser.find_element("id", "live").get_attribute("data-status") == "cancelled", what="cancel")
    assert api.job(long_job["id"])["status"] == "cancelled"

    # -- the list: every job with its status, filtered by status ------------------------------------------------------
    phases.append(("list", time.monotonic()))
    go("/ui/jobs")
    listed = {r.get_attribute("data-job"): r.text for r in browser.find_elements("css selector", "tr[data-job]")}
    assert set(listed) == {job_id, moduli_job["id"], long_job["id"]}
    assert "succeeded" in listed[job_id] and "100.0%" in listed[job_id] and "cancelled" in listed[long_job["id"]]
    shots("jobs")
    browser.find_element("link text", "cancelled").click()
    wait_for(lambda: "status=cancelled" in browser.current_url, what="the filter")
    visited.append(browser.current_url)
    assert [r.get_attribute("data-job") for r in browser.find_elements("css selector", "tr[data-job]")] == [
        long_job["id"]
    ]

    # -- sign out; a second key sees nothing of the first's -----------------------------------------------------------
    phases.append(("second key", time.monotonic()))
    browser.find_element("css selector", "form.signout button").click()
    wait_for(lambda: browser.current_url == f"{server.url}/ui/signin", what="sign-out")
    assert browser.get_cookie("sparseq_session") is None
    go("/ui/jobs")
    assert browser.current_url == f"{server.url}/ui/signin"  # signed out means signed out
    created = subprocess.run(
        [*sparseqd(), "create-key", "bob", "--data-dir", str(server.data_dir)],
        env=process_env(server.data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    bob = created.stdout.strip().splitlines()[-1]
    assert bob.startswith("sk_") and bob != key
    browser.find_element("id", "api_key").send_keys(bob)
    browser.find_element("css selector", "form button[type=submit].primary").click()
    wait_for(lambda: browser.current_url == f"{server.url}/ui/jobs", what="bob's jobs")
    assert browser.find_elements("css selector", "tr[data-job]") == [] and "No jobs yet" in browser.page_source
    shots("second-key-jobs")
    go("/ui/files")
    assert browser.find_elements("css selector", "tr[data-file]") == [] and "No files yet" in browser.page_source
    go(f"/ui/jobs/{job_id}")
    assert "Not found" in browser.title and job_id in browser.page_source  # the message names what was asked for
    assert "ptb.train.txt" not in browser.page_source and "report" not in text_of(browser, "main").lower()
    shots("second-key-not-found")
    for path in (f"/ui/jobs/{job_id}/live", f"/ui/artifacts/{checkpoint['id']}/content"):
        assert fetch_status(browser, path)[0] == 404, path
    go("/ui/jobs/new")
    assert uploaded["id"] not in browser.page_source  # alice's file is not offered to bob

    # -- the keys never showed up in a URL or in the server's log ----------------------------------------------------
    phases.append(("checks", time.monotonic()))
    assert [u for u in visited if key in u or bob in u] == []
    log = server.log_path.read_text(errors="replace")
    assert key not in log and bob not in log

    final_jobs = [api.job(j)["status"] for j in (job_id, moduli_job["id"], long_job["id"])]
    assert all(s in TERMINAL for s in final_jobs)
    with capsys.disabled():
        phases.append(("end", time.monotonic()))
        spent = ", ".join(f"{name} {end - start:.1f}" for (name, start), (_, end) in itertools.pairwise(phases))
        print(f"\ndashboard walk-through (s): {spent}; screenshots ({len(shots.taken)}, {shots.seconds:.1f} s)")
        print(f"dashboard screenshots: {shots.directory}")
