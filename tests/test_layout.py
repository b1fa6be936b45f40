"""The layers' import boundaries, and the package list the wheel ships."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(statement: str) -> set[str]:
    """Top-level packages in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        # the library: usable without the service's frameworks
        (
            "import compress, compress.spec, compress.tasks, compress.estimate, compress.pipeline",
            {"fastapi", "celery", "sqlalchemy", "starlette"},
        ),
        # the API process validates recipes and uploads without torch
        ("import service.app; service.app.create_app", {"torch"}),
        # a worker runs jobs without the web framework
        ("import workers.execute, workers.reaper", {"fastapi", "starlette"}),
    ],
)
def test_import_boundaries(statement, forbidden):
    assert loaded_after(statement) & forbidden == set()


def test_the_boundary_check_sees_imports():  # the check above would pass vacuously if it saw nothing
    assert {"torch", "compress"} <= loaded_after("import compress.pipeline")
    assert "fastapi" in loaded_after("import service.app")


def test_every_package_of_the_tree_ships_in_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("compress", "service", "workers")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject's [tool.setuptools] packages: {sorted(found - listed)}"
    assert "service.migrations" in listed and (ROOT / "migrations" / "env.py").exists()


def test_route_handlers_call_the_service_layer_and_build_no_sql():
    for module in sorted((ROOT / "service" / "routes").glob("*.py")) + sorted((ROOT / "service" / "ui").glob("*.py")):
        source = module.read_text()
        assert "sqlalchemy" not in source, f"{module.relative_to(ROOT)} imports SQLAlchemy: move the query to service/"


def test_job_status_changes_live_in_the_lifecycle_module():
    # every UPDATE of a job's status is a compare-and-set in service/lifecycle.py
    for module in [*(ROOT / "service").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]:
        if module.name == "lifecycle.py":
            continue
        source = module.read_text()
        assignment = re.search(r"^[ \t]*job\.status[ \t]*(,[ \t]*[\w.]+[ \t]*)*=(?!=)", source, re.MULTILINE)
        assert assignment is None, f"{module.relative_to(ROOT)} assigns a job's status: {assignment.group(0)!r}"
        assert ".values(status=" not in source, f"{module.relative_to(ROOT)} updates job statuses itself"


def test_tests_share_helpers_through_plain_modules_only():
    for module in (ROOT / "tests").rglob("*.py"):
        for line in module.read_text().splitlines():
            imported = line.strip()
            if imported.startswith(("from tests", "import tests")):
                assert imported.startswith(("from tests.helpers", "import tests.helpers")), (
                    f"{module.relative_to(ROOT)} imports a test module or a conftest: {imported}"
                )


def test_no_shipped_file_refers_to_the_teams_internal_methods_notes():
    # METHODS.md is not part of the project: code, recipes, benchmarks and the API document cite the papers instead.
    tops = ("compress", "service", "workers", "client", "benchmarks", "recipes", "migrations", "docs", "scripts")
    files = [p for top in tops for p in (ROOT / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files.append(ROOT / "openapi.json")
    assert len(files) > 50  # the walk saw the tree
    naming = [str(p.relative_to(ROOT)) for p in files if b"METHODS.md" in p.read_bytes()]
    assert naming == []
