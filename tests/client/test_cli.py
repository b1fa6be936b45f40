"""The ``sparseq`` command line as a user runs it: a subprocess against a running service, key and URL from the
environment."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.processes import navigation_recipe


def sparseq_command() -> list[str]:
    script = Path(sys.executable).parent / "sparseq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sparseq.cli"]


def run(*args: str, server=None, key: str | None = None, cwd: Path | None = None, stdin: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEQ_")}
    if server is not None:
        env |= {"SPARSEQ_URL": server.url, "SPARSEQ_API_KEY": key or server.key}
    return subprocess.run(
        [*sparseq_command(), *args], capture_output=True, text=True, env=env, cwd=cwd, input=stdin, timeout=300
    )


def test_upload_submit_wait_and_download(server, lm_text, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(lm_text)
    (tmp_path / "out").mkdir()
    uploaded = run("files", "upload", str(corpus), "--purpose", "lm_text", server=server)
    assert uploaded.returncode == 0, uploaded.stderr
    file = json.loads(uploaded.stdout)
    assert file["sha256"] == hashlib.sha256(lm_text).hexdigest()
    fetched = run("files", "download", file["id"], "-o", str(tmp_path / "back.txt"), server=server)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "back.txt").read_bytes() == lm_text
    again = run("files", "download", file["id"], "-o", str(tmp_path / "back.txt"), server=server)
    assert again.returncode == 1 and "already there" in again.stderr  # nothing is replaced unless asked
    forced = run("files", "download", file["id"], "-o", str(tmp_path / "back.txt"), "--force", server=server)
    assert forced.returncode == 0, forced.stderr
    named = run("files", "download", file["id"], server=server, cwd=tmp_path / "out")
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "out" / "corpus.txt").read_bytes() == lm_text  # under the name it was uploaded with
    listed = [json.loads(line) for line in run("files", "list", server=server).stdout.splitlines()]
    assert file["id"] in [f["id"] for f in listed]

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(navigation_recipe(steps_per_epoch=6, epochs=2)))
    created = run("jobs", "create", str(recipe), "--wait", "--timeout", "180", server=server)
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    lines = created.stderr.splitlines()  # progress goes to stderr: not a terminal here, so a line per change
    assert f"{job['id']}: 100% succeeded" in lines
    progress = [line for line in lines if line.startswith(f"{job['id']}: ")]
    assert all(a != b for a, b in itertools.pairwise(progress))  # never the same line twice in a row
    metrics = job["metrics"]
    verdict = f"against {metrics['reference']:.4g} for the reference (dense_full)"
    ending = lines[-1 - len(job["warnings"]) :]  # ends with the verdict, then the warnings
    assert verdict in ending[0] and all(line.startswith("warning ") for line in ending[1:])

    downloaded = run("jobs", "download", job["id"], "--dir", str(tmp_path / "out"), server=server)
    assert downloaded.returncode == 0, downloaded.stderr
    paths = [Path(line) for line in downloaded.stdout.splitlines()]
    assert json.loads(run("jobs", "get", job["id"], server=server).stdout) == job
    assert "model.safetensors" in {p.name for p in paths} and all(p.stat().st_size > 0 for p in paths)


def test_a_recipe_on_stdin_that_the_api_refuses_exits_1_with_its_reason(server):
    recipe = {"task": {"type": "language_model"}, "model": {"cell": "lstm"}}  # a text task needs a 'train' file
    created = run("jobs", "create", "-", server=server, stdin=json.dumps(recipe))
    assert (created.returncode, created.stdout) == (1, "")
    assert created.stderr.startswith("error: ") and created.stderr.count("\n") == 1
    assert "Traceback" not in created.stderr


def test_refusals_are_one_line_on_stderr_without_a_traceback(server, tmp_path):
    missing = run("jobs", "get", "job_nope", server=server)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "error: not_found: no job 'job_nope' (parameter 'job_id')\n"

    wrong_key = run("jobs", "list", server=server, key="sk_not-a-key-at-all-xxxxxxxx")
    assert wrong_key.returncode == 1 and wrong_key.stderr.startswith("error: invalid_api_key: ")

    no_key = run("jobs", "list")
    assert no_key.returncode == 2 and "SPARSEQ_API_KEY" in no_key.stderr

    pasted = run("jobs", "list", server=server, key=server.key + "\r")  # a key read from a Windows file
    assert pasted.returncode == 2 and "trailing newline" in pasted.stderr and server.key not in pasted.stderr

    broken = tmp_path / "recipe.json"
    broken.write_text("{not json")
    bad_recipe = run("jobs", "create", str(broken), server=server)
    assert bad_recipe.returncode == 2 and "is not valid JSON" in bad_recipe.stderr

    valid = tmp_path / "valid.json"
    valid.write_text(json.dumps(navigation_recipe()))
    bad_role = run("jobs", "create", str(valid), "--file", "train", server=server)
    assert bad_role.returncode == 2 and "--file takes ROLE=FILE_ID" in bad_role.stderr

    no_such_file = run("files", "upload", str(tmp_path / "absent.txt"), "--purpose", "lm_text", server=server)
    assert no_such_file.returncode == 1 and "absent.txt" in no_such_file.stderr
    for result in (wrong_key, no_key, pasted, bad_recipe, bad_role, no_such_file):
        assert "Traceback" not in result.stderr


def test_the_cli_learns_tasks_and_purposes_from_the_api(server, tmp_path):
    listed = run("tasks", server=server)
    assert listed.returncode == 0, listed.stderr
    tasks = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [t["type"] for t in tasks] == ["language_model", "sequence_tagging", "navigation", "adding"]
    assert tasks[2]["roles"]["train"]["purpose"] == "trajectories"
    assert listed.stderr == "purposes: lm_text, tagging_conll, trajectories, weights, vocabulary\n"
    # a purpose the service does not know is refused by the service, which names the ones it knows
    path = tmp_path / "notes.txt"
    path.write_text("a b c\n")
    refused = run("files", "upload", str(path), "--purpose", "poetry", server=server)
    assert refused.returncode == 1 and "lm_text" in refused.stderr and "Traceback" not in refused.stderr


def test_a_sweep_from_a_yaml_file_is_followed_summarised_and_downloaded(server, tmp_path):
    """``sparseq sweeps create sweep.yaml --wait`` over two seeds, then list, retrieve and
    download: summary.csv's means and stds are those of the child jobs' metrics, computed here. (No reference runs
    and no speed measurement: the summary's reference and speed-up columns are tests/system/test_sweeps.py's.)"""
    sweep_file = tmp_path / "sweep.yaml"
    grid = {"training.seed": [0, 1]}
    base = {**navigation_recipe(steps_per_epoch=3, epochs=1), "reference": "none", "output": {"measure_speed": False}}
    sweep_file.write_text(yaml.safe_dump({"recipe": base, "grid": grid, "max_parallel": 2}))
    created = run("sweeps", "create", str(sweep_file), "--wait", "--timeout", "400", server=server)
    assert created.returncode == 0, created.stderr
    sweep = json.loads(created.stdout)
    assert (sweep["status"], sweep["combinations"], len(sweep["jobs"])) == ("succeeded", 2, 2)
    assert f"{sweep['id']}: succeeded, 2 combinations (2 succeeded)" in created.stderr.splitlines()
    assert sweep["id"] in [json.loads(line)["id"] for line in run("sweeps", "list", server=server).stdout.splitlines()]
    assert json.loads(run("sweeps", "retrieve", sweep["id"], server=server).stdout)["summary"] == sweep["summary"]

    out = tmp_path / "out"
    downloaded = run("sweeps", "download", sweep["id"], "-d", str(out), "--jobs", server=server)
    assert downloaded.returncode == 0, downloaded.stderr
    names = {Path(line).relative_to(out).as_posix() for line in downloaded.stdout.splitlines()}
    assert {"summary.json", "summary.csv", "pareto.png"} <= names
    assert {f"{job_id}/model.safetensors" for job_id in sweep["jobs"]} <= names
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    seeds = [json.loads(run("jobs", "get", i, server=server).stdout)["metrics"]["value"] for i in sweep["jobs"]]
    with open(out / "summary.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)  # one cell: the seeds are its repetitions
    assert int(row["n"]) == 2
    assert float(row["mean"]) == pytest.approx(statistics.mean(seeds), rel=1e-6)
    assert float(row["std"]) == pytest.approx(statistics.stdev(seeds), rel=1e-6, abs=1e-9)
