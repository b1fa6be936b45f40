"""The recipe: round trips, defaults, and refusals that name the field at fault."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from compress.spec import Recipe, format_validation_error, recipe_json_schema


def lm_recipe(**overrides) -> dict:
    recipe = {
        "task": {"type": "language_model"},
        "model": {"cell": "lstm", "embedding_size": 200, "hidden_size": 300, "num_layers": 2},
        "method": {"type": "predefined", "recurrent": {"components": 3, "input_density": 0.5}},
        "training": {"epochs": 2, "optimizer": "sgd", "lr": 20},
    }
    for dotted, value in overrides.items():
        node = recipe
        *path, last = dotted.split(".")
        for part in path:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(last)
        else:
            node[last] = value
    return recipe


_DELETE = object()


def refusal(recipe: dict) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        Recipe.model_validate(recipe)
    return format_validation_error(caught.value)


def test_json_and_yaml_round_trip_preserve_the_recipe():
    recipe = Recipe.model_validate(lm_recipe())
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe
    assert json.loads(recipe.to_json())["version"] == 1


def test_defaults_are_filled_in():
    recipe = Recipe.model_validate(
        {"task": {"type": "adding"}, "model": {"hidden_size": 128, "cell": "rnn_relu"}, "method": {"type": "dense"}}
    )
    assert recipe.training.batch_size == 20 and recipe.training.seed == 0
    assert recipe.task.sequence_length == 50
    assert recipe.baselines == []


@pytest.mark.parametrize("kind", ["magnitude_pruning", "moduli_pruning"])
def test_pruning_from_trained_weights_defaults_to_the_cubic_schedule_from_the_first_step(kind):
    pruning = {"type": kind, "target_sparsity": 0.9}
    scratch = Recipe.model_validate(lm_recipe(method=pruning)).method
    assert (scratch.schedule, scratch.start_fraction, scratch.end_fraction) == ("linear", 0.1, 0.67)
    from_weights = Recipe.model_validate(lm_recipe(method=pruning, init_from="weights")).method
    assert (from_weights.schedule, from_weights.start_fraction, from_weights.end_fraction) == ("cubic", 0.0, 0.5)
    # what the recipe says is kept; start and end move together (a given start must not meet a defaulted end)
    given = Recipe.model_validate(
        lm_recipe(method=pruning | {"schedule": "linear", "start_fraction": 0.6}, init_from="weights")
    ).method
    assert (given.schedule, given.start_fraction, given.end_fraction) == ("linear", 0.6, 0.67)
    paper = Recipe.model_validate(lm_recipe(method=pruning | {"preset": "paper"}, init_from="weights")).method
    assert (paper.schedule, paper.start_fraction) == ("linear", 0.1)
    stored = Recipe.model_validate(lm_recipe(method=pruning, init_from="weights"))
    assert Recipe.from_json(stored.to_json()) == stored  # a stored recipe reads back as it ran


def test_moduli_method_defaults_follow_the_paper():
    recipe = Recipe.model_validate(
        {
            "task": {"type": "navigation"},
            "model": {"hidden_size": 256, "cell": "rnn_relu"},
            "method": {"type": "moduli_pruning"},
        }
    )
    method = recipe.method
    assert (method.space, method.inhibitor, method.invert, method.target_sparsity) == ("torus", "dog", True, 0.9)


@pytest.mark.parametrize(
    ("overrides", "param", "words"),
    [
        ({"training.epoch": 3}, "training.epoch", "Extra inputs are not permitted"),
        ({"model.bidirectional": True}, "model.bidirectional", "cannot be bidirectional"),
        (
            {"method.recurrent.components": 200, "model.hidden_size": 100},
            "method.recurrent.components",
            "cannot exceed model.hidden_size",
        ),
        ({"method.recurrent.input_density": 0.2}, "method.recurrent", "at least 1/components"),
        ({"method.recurrent.budget_of": {"hidden_scale": 1.5}}, "method.recurrent", "not both"),
        ({"method.type": "quantize"}, "method", "does not match any of the expected tags"),
        ({"model.tie_weights": True}, "model.tie_weights", "embedding_size == hidden_size"),
        ({"model.embedding_size": _DELETE}, "model.embedding_size", "embedding_size is required"),
        # checks of the whole recipe name their field too (it is the param users see: recipe.<field>)
        ({"baselines": ["dense_full", "dense_full"]}, "baselines", "the same baseline twice"),
        ({"method": {"type": "dense"}, "reference": "dense"}, "reference", "it is the reference"),
        ({"method.embedding": {"blocks": 201, "density": 0.5}}, "method.embedding.blocks", "cannot exceed"),
        ({"training.lr": -1}, "training.lr", "greater than 0"),
        ({"version": 2}, "version", "Input should be 1"),
    ],
)
def test_refusals_name_the_field(overrides, param, words):
    problems = refusal(lm_recipe(**overrides))
    assert any(p["param"] == param and words in p["message"] for p in problems), problems


def test_predefined_embedding_checks():
    ok = lm_recipe(**{"method.embedding": {"blocks": 20, "density": 0.25}})
    Recipe.model_validate(ok)
    problems = refusal(lm_recipe(**{"method.embedding": {"blocks": 400, "density": 0.5}}))
    assert "cannot exceed model.embedding_size" in problems[0]["message"]
    # 4 blocks of 50 dims: block 0 alone is density 0.25.
    problems = refusal(lm_recipe(**{"method.embedding": {"blocks": 4, "density": 0.2}}))
    assert "what block 0 needs" in problems[0]["message"]
    problems = refusal(
        {
            "task": {"type": "adding"},
            "model": {"hidden_size": 8},
            "method": {"type": "predefined", "embedding": {"blocks": 2, "density": 0.5}},
        }
    )
    assert any("embedding" in p["message"] for p in problems)


def test_budget_of_mode_is_accepted_and_exclusive():
    recipe = Recipe.model_validate(lm_recipe(**{"method.recurrent": {"budget_of": {"hidden_scale": 1.5}}}))
    assert recipe.method.recurrent.budget_of.hidden_scale == 1.5
    problems = refusal(lm_recipe(**{"method.recurrent": {}}))
    assert "not neither" in problems[0]["message"]


def test_json_schema_is_exported():
    schema = recipe_json_schema()
    assert schema["title"] == "Recipe"
    assert {"task", "model", "method"} <= set(schema["required"])
    # The method union is documented with its discriminator so API clients can generate models from it.
    assert "discriminator" in json.dumps(schema["properties"]["method"])


def test_recipe_names_agree_with_the_library():
    """spec.py lists names without importing torch; the library must accept exactly those."""
    from typing import get_args

    from compress.moduli import CONTROLS, INHIBITORS
    from compress.moduli.spaces import parse_space
    from compress.spec import InhibitorName, SpaceName

    for space in get_args(SpaceName):
        parse_space(space)  # raises on an unknown name
    assert set(get_args(InhibitorName)) == set(INHIBITORS) | set(CONTROLS)


ADDING = {
    "task": {"type": "adding"},
    "model": {"cell": "rnn_tanh", "hidden_size": 16},
    "method": {"type": "dense"},
}
NAVIGATION = {**ADDING, "task": {"type": "navigation"}}


@pytest.mark.parametrize(
    ("recipe", "dotted", "value", "param"),
    [
        # The absurd recipes of issue 12: each one queued and killed workers before these bounds existed.
        (ADDING, "model.hidden_size", 10**30, "model.hidden_size"),
        (ADDING, "training.batch_size", 10**9, "training.batch_size"),
        (NAVIGATION, "task.place_cells", 10**8, "task.place_cells"),
        (ADDING, "task.sequence_length", 10**7, "task.sequence_length"),
        (ADDING, "training.epochs", 10**9, "training.epochs"),
        (ADDING, "task.steps_per_epoch", 10**9, "task.steps_per_epoch"),
        (None, "model.embedding_size", 10**6, "model.embedding_size"),
        (None, "task.max_vocab", 10**9, "task.max_vocab"),
        (None, "training.bptt", 10**6, "training.bptt"),
        (None, "method.recurrent.components", 10**6, "method.recurrent.components"),
        (None, "training.time_budget_s", 1e12, "training.time_budget_s"),
    ],
)
def test_every_size_has_an_upper_bound(recipe, dotted, value, param):
    raw = json.loads(json.dumps(recipe)) if recipe is not None else lm_recipe()
    node = raw
    *path, last = dotted.split(".")
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ValidationError) as caught:
        Recipe.model_validate(raw)
    (problem,) = format_validation_error(caught.value)
    assert problem["param"] == param and "less than" in problem["message"], problem


def test_a_size_beyond_any_integer_is_refused_in_words():
    raw = lm_recipe()
    raw["model"]["hidden_size"] = 1e30  # YAML reads 1e30 as a float; pydantic cannot even parse it as an integer
    (problem,) = refusal(raw)
    assert problem["param"] == "model.hidden_size"
    assert "1e+30" in problem["message"] and "limit" in problem["message"], problem


def test_every_integer_size_in_the_schema_is_bounded_above():
    """A property of the whole schema (so a size added later cannot forget its bound): every integer field bar the
    version has a maximum."""
    schema = recipe_json_schema()
    integers, unbounded = [], []

    def visit(node, where):
        if isinstance(node, dict):
            types = [node.get("type")] + [option.get("type") for option in node.get("anyOf", [])]
            if "integer" in types and "const" not in node and not where.endswith(".version"):
                integers.append(where)
                bounded = "maximum" in node or "exclusiveMaximum" in node
                bounded = bounded or any("maximum" in o or "exclusiveMaximum" in o for o in node.get("anyOf", []))
                if not bounded:
                    unbounded.append(where)
            for key, value in node.items():
                visit(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                visit(value, f"{where}[{index}]")

    visit(schema, "recipe")
    assert len(integers) >= 12 and unbounded == []
