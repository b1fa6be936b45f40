"""A job's output section: smaller stored values, measured speed, and export artifacts (dense safetensors, ONNX)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import compress
from compress.checkpoint import (
    CheckpointError,
    TensorRecord,
    _deflate,
    _inflate,
    load_tensors,
    read_manifest,
    save_tensors,
)
from compress.export import dense_model, export_onnx
from compress.pipeline import build_model, export_dense, load_checkpoint, save_checkpoint, speed_warnings
from compress.runtime.speed import measure_speed
from compress.spec import Recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pruned(shape, sparsity, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * (torch.rand(shape, generator=generator) >= sparsity)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_smaller_values_round_trip_to_the_rounded_originals(tmp_path, dtype):
    tensors = {"w": _pruned((300, 200), 0.95), "b": torch.randn(300), "steps": torch.arange(5)}
    save_tensors(tmp_path / "32.safetensors", tensors)
    manifest = save_tensors(tmp_path / "16.safetensors", tensors, value_dtype=dtype)
    loaded, _ = load_tensors(tmp_path / "16.safetensors")
    smaller = getattr(torch, dtype)
    for name in ("w", "b"):
        assert loaded[name].dtype == torch.float32  # the model's own dtype comes back
        torch.testing.assert_close(loaded[name], tensors[name].to(smaller).float(), atol=0, rtol=0)
        assert manifest["tensors"][name]["stored_dtype"] == dtype
    assert torch.equal(loaded["steps"], tensors["steps"]) and "stored_dtype" not in manifest["tensors"]["steps"]
    # 3000 kept values and 300 biases of 4 bytes become 2 bytes each, and deflating the entries saves some more
    saved = (tmp_path / "32.safetensors").stat().st_size - (tmp_path / "16.safetensors").stat().st_size
    kept = int((tensors["w"] != 0).sum()) + 300
    assert saved > 2 * kept
    assert "w::values" in manifest["tensors"]["w"]["deflated"]


def test_a_deflated_entry_inflates_to_its_count_and_no_further():
    values = torch.randn(1000).half()
    packed = _deflate(values)
    record = TensorRecord("w", "gaps", (4000,), "float32", 1000, {}, "float16", {"w::values": 1000})
    assert torch.equal(_inflate(record, "w::values", packed, torch.float16), values)
    short = TensorRecord("w", "gaps", (4000,), "float32", 10, {}, "float16", {"w::values": 10})
    with pytest.raises(CheckpointError, match="does not inflate to 10 elements"):
        _inflate(short, "w::values", packed, torch.float16)
    with pytest.raises(CheckpointError, match="does not inflate"):
        _inflate(record, "w::values", torch.tensor([1, 2, 3], dtype=torch.uint8), torch.float16)


def test_values_beyond_float16_are_refused_and_underflow_counts_as_pruned(tmp_path):
    with pytest.raises(CheckpointError, match=r"'big'.*float16's range"):
        save_tensors(tmp_path / "a.safetensors", {"big": torch.tensor([1.0, 1e6])}, value_dtype="float16")
    save_tensors(tmp_path / "b.safetensors", {"big": torch.tensor([1.0, 1e6])}, value_dtype="bfloat16")
    manifest = save_tensors(tmp_path / "c.safetensors", {"tiny": torch.tensor([1.0, 1e-9, 0.0])}, value_dtype="float16")
    assert manifest["tensors"]["tiny"]["nnz"] == 1  # 1e-9 is zero in float16
    assert load_tensors(tmp_path / "c.safetensors")[0]["tiny"].tolist() == [1.0, 0.0, 0.0]


TASKS = {
    "language_model": (
        {"type": "language_model"},
        {"cell": "lstm", "embedding_size": 16, "hidden_size": 16, "num_layers": 2, "tie_weights": True},
        {"vocab_size": 30},
    ),
    "sequence_tagging": (
        {"type": "sequence_tagging"},
        {"cell": "gru", "embedding_size": 12, "hidden_size": 12, "bidirectional": True},
        {"vocab_size": 30, "num_tags": 4},
    ),
    "navigation": (
        {"type": "navigation", "place_cells": 10, "sequence_length": 5},
        {"cell": "rnn_relu", "hidden_size": 16},
        {},
    ),
    "adding": ({"type": "adding", "sequence_length": 5}, {"cell": "rnn_tanh", "hidden_size": 16}, {}),
}
PREDEFINED = {"type": "predefined", "recurrent": {"components": 2, "input_density": 0.5}}


def _checkpoint(tmp_path, task: str, method: dict):
    task_spec, model_spec, sizes = TASKS[task]
    if task == "language_model" and method["type"] == "predefined":
        method = {**method, "embedding": {"blocks": 4, "density": 0.5}}
    recipe = Recipe.model_validate({"task": task_spec, "model": model_spec, "method": method})
    torch.manual_seed(0)
    model = build_model(recipe, sizes)
    path = tmp_path / f"{task}.safetensors"
    save_checkpoint(path, model, recipe, sizes=sizes)
    return path, load_checkpoint(path)[0].eval()


def _inputs(task: str, steps: int, batch: int):
    generator = torch.Generator().manual_seed(5)
    if task in ("language_model", "sequence_tagging"):
        return (torch.randint(0, 30, (steps, batch), generator=generator),)
    if task == "navigation":
        return torch.randn(batch, steps, 2, generator=generator) * 0.05, torch.rand(batch, 10, generator=generator)
    return (torch.rand(batch, steps, 2, generator=generator),)


def _torch_output(task: str, model: nn.Module, inputs) -> np.ndarray:
    with torch.no_grad():
        if task == "language_model":
            return model(*inputs)[0].numpy()
        if task == "sequence_tagging":
            tokens = inputs[0]
            return model(tokens, torch.full((tokens.shape[1],), tokens.shape[0])).numpy()
        return model(*inputs).numpy()


@pytest.mark.parametrize("method", [PREDEFINED, {"type": "magnitude_pruning"}], ids=["predefined", "pruned"])
@pytest.mark.parametrize("task", list(TASKS))
def test_onnx_runs_in_onnxruntime_like_the_torch_model(tmp_path, task, method):
    import onnx
    import onnxruntime

    path, reference = _checkpoint(tmp_path, task, method)
    out = export_onnx(path, tmp_path / "model.onnx")
    assert onnx.load(str(out)).opset_import[0].version == 17
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = _inputs(task, steps=9, batch=3)  # other sizes than the traced ones: the axes are dynamic
    names = [i.name for i in session.get_inputs()]
    (got,) = session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
    np.testing.assert_allclose(got, _torch_output(task, reference, inputs), atol=2e-5, rtol=1e-4)


def test_dense_safetensors_loads_into_plain_torch_modules(tmp_path):
    path, reference = _checkpoint(tmp_path, "sequence_tagging", PREDEFINED)
    weights = load_file(str(export_dense(path, tmp_path / "model.dense.safetensors")))
    embedding, rnn = nn.Embedding(30, 12), nn.GRU(12, 12, bidirectional=True)
    hidden, output = nn.Linear(24, 12), nn.Linear(12, 4)
    for prefix, module in (("embedding", embedding), ("rnn", rnn), ("hidden", hidden), ("output", output)):
        module.load_state_dict({k.removeprefix(f"{prefix}."): v for k, v in weights.items() if k.startswith(prefix)})
    tokens = _inputs("sequence_tagging", 6, 2)[0]
    with torch.no_grad():
        plain = output(torch.tanh(hidden(rnn(embedding(tokens))[0])))
    np.testing.assert_allclose(plain.numpy(), _torch_output("sequence_tagging", reference, (tokens,)), atol=2e-5)
    assert isinstance(dense_model(path)[0].rnn, nn.GRU)


def test_measured_speed_is_the_ratio_of_the_times_it_reports(tmp_path):
    path, _ = _checkpoint(tmp_path, "language_model", PREDEFINED)
    speed = measure_speed(path, "cpu", budget_s=0.02)
    for label in ("latency", "throughput"):
        times = speed[f"{label}_us_per_token"]
        assert speed[f"speedup_{label}"] == pytest.approx(times["dense"] / times["runtime"], rel=0.01)
    assert speed["plan"]["modules"][0]["module"] == "rnn"


def test_a_speed_up_below_the_dense_model_is_a_warning():
    speed = {"device": "cpu", "threads": 2, "speedup_latency": 0.58, "speedup_throughput": 1.7}
    (warning,) = speed_warnings(speed)
    assert warning["code"] == "slower_than_dense" and "0.58x" in warning["message"] and "batch-1" in warning["message"]
    assert speed_warnings(speed | {"speedup_latency": 0.95}) == []  # within the timing noise the runtime allows
    assert len(speed_warnings(speed | {"speedup_throughput": 0.5})) == 2
    assert speed_warnings({"skipped": "no sample inputs"}) == speed_warnings(None) == []


def test_a_job_with_an_output_section(tmp_path, ptb):
    (tmp_path / "train.txt").write_text("\n".join(ptb["train"].splitlines()[:200]) + "\n")
    recipe = Recipe.model_validate(
        {
            "task": {"type": "language_model", "max_vocab": 200},
            "model": {"cell": "lstm", "embedding_size": 16, "hidden_size": 16},
            "method": {"type": "magnitude_pruning", "target_sparsity": 0.8},
            "output": {"export": ["dense_safetensors", "onnx"], "value_dtype": "float16"},
        }
    )
    result = compress.run(recipe, {"train": tmp_path / "train.txt"}, output_dir=tmp_path / "out", device="cpu")
    names = {p.name for p in result.files}
    assert {"model.safetensors", "report.json", "model.dense.safetensors", "model.onnx", "speed.png"} <= names
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["speed"]["speedup_latency"] == result.metrics["speedup_latency"] > 0
    assert result.metrics["speedup_throughput"] > 0 and report["onnx"]["opset"] == 17
    values = report["values"]
    assert values["dtype"] == "float16" and values["checkpoint_bytes"] < values["checkpoint_bytes_float32"]
    assert values["change"] == pytest.approx(values["float16"] - values["float32"])
    assert abs(values["change"]) < 0.01 * values["float32"]  # float16 rounding barely moves the perplexity
    assert report["checkpoint_bytes"] == (tmp_path / "out" / "model.safetensors").stat().st_size
    # a measured speed-up below 0.9 is a warning on the job, whichever way this machine's timing came out
    slow = [label for label in ("latency", "throughput") if result.metrics[f"speedup_{label}"] < 0.9]
    assert len([w for w in report["warnings"] if w["code"] == "slower_than_dense"]) == len(slow)
    assert result.warnings == report["warnings"]
    assert read_manifest(result.checkpoint)["tensors"]["rnn.weight_hh_l0"]["stored_dtype"] == "float16"
    with pytest.raises(ValueError, match="twice"):
        Recipe.model_validate({**recipe.model_dump(), "output": {"export": ["onnx", "onnx"]}})
