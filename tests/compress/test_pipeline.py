"""compress.run end to end: every task x method on tiny recipes, checkpoints reloaded, baselines, lottery, export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import compress
from compress import report as report_module
from compress.checkpoint import read_manifest
from compress.predefined import SparseEmbedding, SparseRecurrent
from compress.report import curves_figure
from compress.spec import Recipe
from compress.synthetic import tagging_corpus, write_conll
from compress.train import Callbacks

TASKS = {
    "language_model": (
        {"type": "language_model", "max_vocab": 300},
        {"cell": "lstm", "embedding_size": 16, "hidden_size": 24},
    ),
    "sequence_tagging": (
        {"type": "sequence_tagging"},
        {"cell": "lstm", "embedding_size": 12, "hidden_size": 12, "bidirectional": True},
    ),
    "navigation": (
        {"type": "navigation", "place_cells": 24, "sequence_length": 8, "steps_per_epoch": 6},
        {"cell": "rnn_relu", "hidden_size": 32},
    ),
    "adding": (
        {"type": "adding", "sequence_length": 10, "steps_per_epoch": 6},
        {"cell": "rnn_relu", "hidden_size": 16},
    ),
}
METHODS = {
    "dense": {"type": "dense"},
    "predefined": {"type": "predefined", "recurrent": {"components": 2, "input_density": 0.5}},
    "magnitude_pruning": {"type": "magnitude_pruning", "target_sparsity": 0.8},
    "moduli_pruning": {"type": "moduli_pruning", "target_sparsity": 0.8, "space": "torus"},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, ptb):
    directory = tmp_path_factory.mktemp("data")
    (directory / "lm_train.txt").write_text("\n".join(ptb["train"].splitlines()[:400]) + "\n")
    (directory / "lm_valid.txt").write_text("\n".join(ptb["valid"].splitlines()[:60]) + "\n")
    corpus = tagging_corpus(120, vocab_size=200, tags=6, seed=2)
    write_conll(directory / "tag_train.conll", corpus[:100])
    write_conll(directory / "tag_valid.conll", corpus[100:])
    return {
        "language_model": {"train": directory / "lm_train.txt", "valid": directory / "lm_valid.txt"},
        "sequence_tagging": {"train": directory / "tag_train.conll", "valid": directory / "tag_valid.conll"},
        "navigation": {},
        "adding": {},
    }


def recipe(task: str, method: str, **extra) -> Recipe:
    task_spec, model_spec = TASKS[task]
    method_spec = dict(METHODS[method])
    if method == "predefined" and task in ("language_model", "sequence_tagging"):
        method_spec["embedding"] = {"blocks": 4, "density": 0.5}
    training = {"epochs": 2, "batch_size": 8, "bptt": 20, "lr": 3e-3, "evaluations": 2}
    body = {"task": task_spec, "model": model_spec, "method": method_spec, "training": training}
    return Recipe.model_validate(body | {"reference": "none"} | extra)  # references: tested on their own below


def sample_input(task: str, model):
    generator = torch.Generator().manual_seed(0)
    if task == "language_model":
        return (torch.randint(0, 300, (7, 3), generator=generator),)
    if task == "sequence_tagging":
        return torch.randint(0, 50, (7, 3), generator=generator), torch.tensor([7, 5, 2])
    if task == "navigation":
        return torch.randn(3, 8, 2, generator=generator) * 0.02, torch.rand(3, 24, generator=generator)
    return (torch.rand(3, 10, 2, generator=generator),)


def prunable_sparsity(model) -> float:
    weights = [p for p in model.parameters() if p.dim() >= 2]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_and_method(task, method, data, tmp_path):
    result = compress.run(recipe(task, method), data[task], output_dir=tmp_path, device="cpu")
    metric = {
        "language_model": "valid_perplexity",
        "sequence_tagging": "valid_accuracy",
        "navigation": "valid_position_error_cm",
        "adding": "valid_mse",
    }[task]
    assert np.isfinite(result.metrics[metric])
    assert len(result.history) == 2
    loaded, manifest = compress.load_checkpoint(result.checkpoint)
    assert manifest["recipe"]["method"]["type"] == method
    assert manifest["metrics"][metric] == pytest.approx(result.metrics[metric])
    result.model.eval()
    loaded.eval()
    inputs = sample_input(task, loaded)
    with torch.no_grad():
        expected, got = result.model(*inputs), loaded(*inputs)
    expected = expected[0] if isinstance(expected, tuple) else expected
    got = got[0] if isinstance(got, tuple) else got
    assert torch.equal(expected, got)
    report = json.loads((tmp_path / "report.json").read_text())
    if method.endswith("pruning"):
        # Uniform allocation (the default) to 80% of every weight matrix; a tensor keeps more only where its floor
        # (one weight per row and per column) needs it, and then the job says the target was not reached.
        assert report["pruning"]["sparsity"] == pytest.approx(prunable_sparsity(loaded), abs=1e-6)
        for name, weight in loaded.named_parameters():
            if weight.dim() >= 2:
                floor = weight.size(0) + weight.size(1)
                assert int(weight.count_nonzero()) <= max(round(0.2 * weight.numel()) + 1, floor), name
        reached = prunable_sparsity(loaded) >= 0.8 - 5e-3
        assert reached or any(w["code"] == "sparsity_not_reached" for w in result.warnings)
        assert all(w.count_nonzero() > 0 for w in loaded.parameters() if w.dim() >= 2)
        for name, weight in loaded.named_parameters():  # the manifest's record agrees with the weights themselves
            if weight.dim() >= 2:
                zeros = int((weight == 0).sum())
                assert manifest["tensors"][name]["nnz"] == weight.numel() - zeros
                assert manifest["tensors"][name]["sparsity"] == pytest.approx(zeros / weight.numel(), abs=1e-6)
    if method == "predefined":
        assert any(isinstance(m, SparseRecurrent) for m in loaded.modules())
        if task in ("language_model", "sequence_tagging"):
            assert any(isinstance(m, SparseEmbedding) for m in loaded.modules())
    if method == "moduli_pruning":
        assert (tmp_path / "moduli_neurons.png").stat().st_size > 1000
    assert report["checkpoint_bytes"] == result.checkpoint.stat().st_size
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # a dense job has nothing to compare: its dense equivalent is itself, and these recipes have no reference
    measured = "speedup_latency" in report["speed"]
    assert (tmp_path / "speed.png").exists() == (measured and method != "dense")
    assert (tmp_path / "tradeoff.png").exists() == (measured and method != "dense")


def test_baselines_and_lottery_check(data, tmp_path):
    progress = []
    callbacks = Callbacks(progress=progress.append, progress_every=0.0)
    spec = recipe("adding", "moduli_pruning", baselines=["dense_same_params", "dense_full"])
    spec = spec.model_copy(update={"method": spec.method.model_copy(update={"lottery_check": True})})
    result = compress.run(spec, {}, callbacks, output_dir=tmp_path, device="cpu")
    assert "lottery_valid_mse" in result.metrics
    full, same = result.baselines["dense_full"], result.baselines["dense_same_params"]
    assert full["hidden_size"] == 16
    nonzero = sum(int((p != 0).sum()) for p in result.model.parameters())
    assert same["hidden_size"] < 16
    assert abs(same["parameters"] - nonzero) <= abs(full["parameters"] - nonzero)
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    phases = {"train", "prune", "fine_tune", "lottery", "dense_same_params", "dense_full"}
    assert phases - {"train"} <= {p.phase for p in progress} <= phases  # pruning may start at the first step
    assert progress[-1].metrics["eta_s"] == pytest.approx(0.0, abs=1e-6)  # nothing left at the end


def test_init_from_and_export_dense(data, tmp_path, monkeypatch):
    first = compress.run(
        recipe("language_model", "dense"), data["language_model"], output_dir=tmp_path / "a", device="cpu"
    )
    spec = recipe("language_model", "magnitude_pruning", init_from="dense weights", reference="auto")
    paths = dict(data["language_model"], init_from=first.checkpoint)
    drawn = []
    monkeypatch.setattr(report_module, "curves_figure", lambda *a, **k: drawn.append(k) or curves_figure(*a, **k))
    pruned = compress.run(spec, paths, output_dir=tmp_path / "b", device="cpu")
    assert prunable_sparsity(pruned.model) == pytest.approx(0.8, abs=1e-3)
    # curves.png draws the uploaded weights, evaluated before training, as the job's reference
    reference = drawn[0]["compared"]["reference: your weights"]
    assert reference["valid_perplexity"] == pruned.verdict["reference"]

    predefined = compress.run(
        recipe("language_model", "predefined"), data["language_model"], output_dir=tmp_path / "c", device="cpu"
    )
    out = compress.export_dense(predefined.checkpoint, tmp_path / "dense.safetensors")
    dense = load_file(str(out))
    assert dense["rnn.weight_hh_l0"].shape == (4 * 24, 24)
    assert dense["embedding.weight"].shape == (len(read_manifest(predefined.checkpoint)["vocabulary"]), 16)
    # The exported dense LSTM computes what the sparse one does.
    lstm = torch.nn.LSTM(16, 24)
    lstm.load_state_dict({k.removeprefix("rnn."): v for k, v in dense.items() if k.startswith("rnn.")})
    x = torch.randn(5, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(lstm(x)[0], predefined.model.rnn(x)[0], atol=1e-6, rtol=0)


def test_init_from_with_wrong_shapes_is_a_clear_error(data, tmp_path):
    first = compress.run(recipe("adding", "dense"), {}, output_dir=tmp_path / "a", device="cpu")
    bigger = recipe("adding", "magnitude_pruning", init_from="x")
    bigger = bigger.model_copy(update={"model": bigger.model.model_copy(update={"hidden_size": 20})})
    with pytest.raises(ValueError, match=r"mis-shaped: rnn.weight_ih_l0 is \(16, 2\), the recipe needs \(20, 2\)") as e:
        compress.run(bigger, {"init_from": first.checkpoint}, output_dir=tmp_path / "b", device="cpu")
    assert e.value.code == "weights_mismatch"


def test_report_sparsity_counts_predefined_structure(data, tmp_path):
    result = compress.run(recipe("adding", "predefined"), {}, output_dir=tmp_path, device="cpu")
    rnn = result.model.rnn
    dense = torch.nn.RNN(2, 16, nonlinearity="relu")
    dense_count = (
        sum(p.numel() for p in result.model.parameters())
        - sum(p.numel() for p in rnn.parameters())
        + sum(p.numel() for p in dense.parameters())
    )
    parameters = result.report["parameters"]
    assert parameters["dense_equivalent"] == dense_count
    assert parameters["sparsity"] == pytest.approx(1 - parameters["nonzero"] / dense_count)
    assert parameters["sparsity"] > 0.2  # k=2 halves W_hh and the input windows


def test_navigation_trains_on_uploaded_trajectories(tmp_path):
    """Trajectories from the library's own simulator, saved as the documented .npz, train like generated ones."""
    from compress.problems.navigation import NavigationConfig, simulate_trajectories

    paths = simulate_trajectories(
        NavigationConfig(hidden_size=8, place_cells=24, sequence_length=8, batch_size=60),
        generator=torch.Generator().manual_seed(3),
    )
    archive = tmp_path / "walks.npz"
    np.savez(archive, velocity=paths.velocity.numpy(), position=paths.position.numpy(), start=paths.start.numpy())
    result = compress.run(recipe("navigation", "dense"), {"train": archive}, output_dir=tmp_path / "out", device="cpu")
    assert np.isfinite(result.metrics["valid_position_error_cm"])
    # 60 walks: 6 held out, 54 trained on in batches of 8 -> 7 steps an epoch.
    assert result.history[-1]["step"] == 2 * 7


def test_broken_trajectories_fail_with_the_array_named(tmp_path):
    from compress.data import DataError

    archive = tmp_path / "walks.npz"
    np.savez(archive, velocity=np.zeros((4, 8, 2)), position=np.zeros((4, 8, 2)))
    with pytest.raises(DataError, match="'start'"):
        compress.run(recipe("navigation", "dense"), {"train": archive}, output_dir=tmp_path / "out", device="cpu")


def _not_reached(result_or_warnings) -> str:
    warnings = getattr(result_or_warnings, "warnings", result_or_warnings)
    (warning,) = [w for w in warnings if w["code"] == "sparsity_not_reached"]
    return warning["message"]


def test_sparsity_not_reached_blames_the_floors_when_they_keep_the_weights(tmp_path):
    # 16 hidden units, 2 inputs, 99% asked with the floors on and min_density 0: the floors alone keep one weight per
    # row and per column (W_ih keeps 16 of 32), so the advice is to turn them off, not to lower min_density.
    body = recipe("adding", "magnitude_pruning").model_dump()
    body["method"] |= {"target_sparsity": 0.99, "floors": True, "min_density": 0.0}
    result = compress.run(Recipe.model_validate(body), {}, output_dir=tmp_path, device="cpu")
    message = _not_reached(result)
    assert "method.floors: false" in message and "method.target_sparsity" in message
    assert "min_density" not in message


def test_sparsity_not_reached_blames_min_density_when_it_is_set():
    from compress.pipeline import find_warnings

    body = recipe("adding", "magnitude_pruning").model_dump()
    body["method"] |= {"target_sparsity": 0.9, "floors": False, "min_density": 0.3}
    report = {"tensors": [], "pruning": {"sparsity": 0.7, "target_sparsity": 0.9}}
    message = _not_reached(find_warnings(report, {}, Recipe.model_validate(body), set()))
    assert "lower method.min_density" in message and "30.0%" in message
    assert "floors" not in message
    body["method"]["floors"] = True  # both keep weights: both are named
    message = _not_reached(find_warnings(report, {}, Recipe.model_validate(body), set()))
    assert "lower method.min_density" in message and "method.floors: false" in message
