"""The OpenAPI document: FastAPI's own, completed with the recipe's schema from compress.spec.

The document is checked in as ``openapi.json`` (reviewed like code: a test fails when the API changes without it).
Regenerate it with ``make openapi`` (= ``python -m service.openapi openapi.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from compress.spec import Recipe
from service.schemas import RECIPE_COMPONENT

COMPONENT_MARK = "x-sparseq-component"  # service.schemas.RecipeBody: "the component of this name goes here"
REGENERATE = "make openapi"

TAGS = [
    {"name": "files", "description": "Datasets and weights: upload (validated for their purpose), list, download."},
    {"name": "jobs", "description": "A recipe and its files in, a compressed model out: create, poll, cancel."},
    {"name": "sweeps", "description": "A grid of recipes run as jobs, max_parallel at once, and their summary."},
    {"name": "artifacts", "description": "What a job produced: the sparse checkpoint, its report and plots."},
    {"name": "estimate", "description": "Parameters, size, FLOPs and memory of a recipe, before any compute."},
    {"name": "system", "description": "Health, readiness and Prometheus metrics."},
]


def recipe_components() -> dict[str, dict[str, Any]]:
    """The Recipe and every model it is made of, as components referring to each other."""
    schema = Recipe.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {**definitions, RECIPE_COMPONENT: schema}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Adds the recipe's components and puts a reference wherever a schema is marked with ``x-sparseq-component``."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in recipe_components().items():
        if name in schemas and schemas[name] != schema:
            raise RuntimeError(f"two different schemas are called {name!r} (the service's and the recipe's)")
        schemas[name] = schema
    return _refer(document)


def _refer(node: Any) -> Any:
    if isinstance(node, dict):
        if COMPONENT_MARK in node:
            reference = {"$ref": f"#/components/schemas/{node[COMPONENT_MARK]}"}
            extra = {k: v for k, v in node.items() if k not in (COMPONENT_MARK, "type")}  # e.g. its description
            return {**reference, **extra}
        return {key: _refer(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_refer(item) for item in node]
    return node


def install(app) -> None:
    """``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) serves the completed document, built once."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # FastAPI's own cache, as its docs' recipe for extending the document does
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi


def document() -> dict[str, Any]:
    """The document of an app with default settings: it depends on no setting (nothing here connects anywhere)."""
    from service.app import create_app
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as directory:
        app = create_app(Settings(data_dir=Path(directory), environment="development"))
        try:
            return app.openapi()
        finally:
            app.state.engine.dispose()


def render(value: dict[str, Any]) -> str:
    """The snapshot's text: stable key order as FastAPI emits it, two-space indent, a final newline."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.openapi", description="Write the API's OpenAPI document.")
    parser.add_argument("output", nargs="?", default="-", help="the file to write (default: standard output)")
    output = parser.parse_args(argv).output
    text = render(document())
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
