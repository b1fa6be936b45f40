"""The README's recipes are recipes: every YAML block in it parses as one (a fragment as part of the first), and
there is one for every method."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from compress.spec import Recipe

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_yaml_recipe_in_the_readme_parses_and_every_method_has_one():
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    methods, base = set(), None
    for block in blocks:
        raw = yaml.safe_load(block)
        if "task" not in raw:  # a fragment (e.g. an output section): it must fit into a whole recipe
            Recipe.model_validate(base | raw)
            continue
        base = base or raw
        if raw.get("init_from") == "file_...":
            raw["init_from"] = "file_0"  # a placeholder for the user's file id
        methods.add(Recipe.model_validate(raw).method.type)
    assert methods == {"predefined", "moduli_pruning", "magnitude_pruning", "dense"}
