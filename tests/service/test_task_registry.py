"""A task is one definition: a toy task written only here runs through compress.run and passes the API's job
validation, without any other file knowing it; an unregistered type is refused, naming the known ones."""

from __future__ import annotations

import math
from typing import Literal

import pytest
import torch
from pydantic import Field
from torch import nn

from compress import run, tasks
from compress.spec import Recipe
from compress.tasks import Metric, Role, StrictModel, TaskDefinition


class RecallTask(StrictModel):
    """Recall the first number of a sequence at its end."""

    type: Literal["recall"] = "recall"
    sequence_length: int = Field(6, ge=2, le=100)
    steps_per_epoch: int = Field(60, ge=1, le=10_000)


class RecallModel(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(1, hidden, batch_first=True)
        self.decoder = nn.Linear(hidden, 1)

    def forward(self, inputs):
        output, _ = self.rnn(inputs)
        return self.decoder(output[:, -1]).squeeze(-1)


class RecallAdapter:
    metric, lower_is_better = "valid_mse", True  # the pipeline sets both from the definition

    def __init__(self, recipe) -> None:
        self.length, self.batch = recipe.task.sequence_length, recipe.training.batch_size
        self.steps_per_epoch, self.seed = recipe.task.steps_per_epoch, recipe.training.seed
        self.valid = self._batch(torch.Generator().manual_seed(10_000 + self.seed), 256)

    def _batch(self, generator, size):
        inputs = torch.rand(size, self.length, 1, generator=generator)
        return inputs, inputs[:, 0, 0]

    def start_epoch(self, epoch):
        pass

    def batches(self, epoch):
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        for _ in range(self.steps_per_epoch):
            yield self._batch(generator, self.batch)

    def loss(self, model, batch):
        inputs, targets = batch
        return nn.functional.mse_loss(model(inputs), targets)

    @torch.no_grad()
    def evaluate(self, model):
        return {"valid_loss": self.loss(model, self.valid).item(), "valid_mse": self.loss(model, self.valid).item()}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


RECALL = TaskDefinition(
    type="recall",
    spec=RecallTask,
    description=RecallTask.__doc__,
    metric=Metric("valid_mse", lower_is_better=True),
    roles={"notes": Role("lm_text", description="an optional text file (to show roles are the task's)")},
    build_adapter=lambda recipe, data, device: RecallAdapter(recipe),
    build_model=lambda recipe, sizes: RecallModel(recipe.model.hidden_size),
    sequence_length=lambda recipe: recipe.task.sequence_length,
)


def recall_recipe(**method) -> dict:
    return {
        "task": {"type": "recall"},
        "model": {"cell": "rnn_tanh", "hidden_size": 16},
        "method": method or {"type": "dense"},
        "training": {"epochs": 2, "batch_size": 32, "lr": 0.01, "evaluations": 1},
        "reference": "none",
    }


@pytest.fixture
def recall():
    tasks.register(RECALL)
    yield RECALL
    tasks.unregister("recall")


def test_an_unregistered_type_is_refused_naming_the_known_ones():
    assert "recall" not in tasks.known()
    with pytest.raises(ValueError, match=r"language_model.*sequence_tagging.*navigation.*adding"):
        Recipe.model_validate(recall_recipe())
    with pytest.raises(tasks.UnknownTask, match="unknown task type 'recall'; the known ones are language_model"):
        tasks.get("recall")


def test_the_toy_task_trains_and_prunes_through_compress_run(recall, tmp_path):
    recipe = Recipe.model_validate(recall_recipe(type="magnitude_pruning", target_sparsity=0.5))
    result = run(recipe, {}, output_dir=tmp_path, device="cpu")

    # predicting the mean of U(0, 1) scores its variance, 1/12: the trained model must beat that clearly
    assert result.metrics["valid_mse"] < 0.5 / 12
    assert result.verdict["name"] == "valid_mse" and result.verdict["lower_is_better"] is True
    weight = result.model.rnn.weight_hh_l0
    assert math.isclose((weight == 0).float().mean().item(), 0.5, abs_tol=0.02)
    assert (tmp_path / "model.safetensors").exists()


def test_the_api_validates_jobs_of_the_toy_task_from_its_definition(recall, client, alice, train_file):
    response = client.post("/v1/jobs", headers=alice, json={"recipe": recall_recipe(), "files": {}})
    assert response.status_code == 201, response.text
    assert response.json()["recipe"]["task"] == {"type": "recall", "sequence_length": 6, "steps_per_epoch": 60}

    # its roles are its own: one it names is checked for its purpose, one it does not name is refused
    named = client.post(
        "/v1/jobs", headers=alice, json={"recipe": recall_recipe(), "files": {"notes": train_file["id"]}}
    )
    assert named.status_code == 201, named.text
    other = client.post(
        "/v1/jobs", headers=alice, json={"recipe": recall_recipe(), "files": {"train": train_file["id"]}}
    )
    assert other.status_code == 400
    assert other.json()["error"]["param"] == "files.train"
    assert "['notes']" in other.json()["error"]["message"]

    # a field the toy's recipe section does not have is named
    bad = recall_recipe()
    bad["task"]["max_vocab"] = 3
    refused = client.post("/v1/jobs", headers=alice, json={"recipe": bad, "files": {}})
    assert refused.status_code == 422
    assert refused.json()["error"]["param"] == "recipe.task.recall.max_vocab"


def test_unregistering_restores_the_recipe_schema(recall):
    assert "recall" in Recipe.model_json_schema()["properties"]["task"]["discriminator"]["mapping"]
    tasks.unregister("recall")
    assert "recall" not in Recipe.model_json_schema()["properties"]["task"]["discriminator"]["mapping"]
    tasks.register(RECALL)  # for the fixture's teardown


def test_the_api_lists_the_registered_tasks_with_their_roles_and_purposes(recall, client, alice):
    response = client.get("/v1/tasks", headers=alice)
    assert response.status_code == 200, response.text
    listing = response.json()
    by_type = {task["type"]: task for task in listing["data"]}
    assert list(by_type) == list(tasks.known())
    assert by_type["recall"]["roles"] == {
        "notes": {"purpose": "lm_text", "required": False, "description": RECALL.roles["notes"].description}
    }
    assert by_type["language_model"]["metric"] == {"name": "valid_perplexity", "lower_is_better": True}
    assert by_type["sequence_tagging"]["metric"]["lower_is_better"] is False
    assert by_type["language_model"]["roles"]["train"]["required"] is True
    assert listing["purposes"] == ["lm_text", "tagging_conll", "trajectories", "weights", "vocabulary"]
    # the navigation task cites the paper it comes from, not a document the project does not ship
    assert "Mackey et al., 2024" in by_type["navigation"]["description"]
    assert "METHODS" not in response.text
    assert client.get("/v1/tasks").status_code == 401
