"""Every shipped sweep file (recipes/) parses and each of its combinations passes the API's recipe validation and
admission under the default settings (nothing runs; the files' data checks need uploaded files and are left out)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from service import jobs as job_service
from service.admission import admit
from service.schemas import SweepCreate
from service.settings import Settings
from service.sweeps import combinations, set_path

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


def test_the_recipes_are_there():
    assert {p.stem for p in RECIPES} >= {"moduli_navigation_cpu", "moduli_navigation_paper", "ptb_predefined", "adding"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_combination_validates(path):
    body = SweepCreate.model_validate(yaml.safe_load(path.read_text()))
    combos = combinations(body.grid, body.overrides)
    assert len(combos) <= Settings().max_sweep_jobs
    for overrides in combos:
        raw = copy.deepcopy(body.recipe)
        for dotted, value in overrides.items():
            set_path(raw, dotted, value)
        recipe = job_service.parse_recipe(raw)
        admit(recipe, Settings(), train_tokens=929_589 if recipe.task.type == "language_model" else None)
