"""Export artifacts: the dense equivalent of a checkpoint as plain PyTorch weights, and as an ONNX model.

- ``model.dense.safetensors``: PyTorch's own parameter names and shapes (``rnn.weight_ih_l0``, ``embedding.weight``,
  ``decoder.weight``...), predefined-sparse layers expanded, so ``torch.nn.LSTM``/``GRU``/``RNN``, ``nn.Embedding``
  and ``nn.Linear`` load it directly (:func:`compress.pipeline.export_dense`).
- ``model.onnx``: the dense-equivalent model, opset :data:`ONNX_OPSET`, sequence length and batch as dynamic axes.
  Inputs by task: language model ``tokens`` (T, B) int64 -> ``logits`` (T, B, V); tagger ``tokens`` (T, B) ->
  ``tag_logits`` (T, B, tags), for batches without padding (one sentence, or sentences of one length: ONNX has no
  packed sequences); navigation ``velocity`` (B, T, 2) and ``start_code`` (B, place_cells) -> ``place_logits``;
  adding ``inputs`` (B, T, 2) -> ``prediction`` (B,).

ONNX export uses PyTorch's TorchScript exporter (``dynamo=False``): it maps ``nn.LSTM``/``GRU``/``RNN`` onto ONNX's
own LSTM/GRU/RNN operators and needs no package beyond torch; the newer exporter needs ``onnxscript`` and unrolls
recurrent layers into loops.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

ONNX_OPSET = 17
DENSE_NAME = "model.dense.safetensors"
ONNX_NAME = "model.onnx"


def dense_model(path: str | Path, dense_path: str | Path | None = None) -> tuple[nn.Module, dict]:
    """The checkpoint's model rebuilt as plain dense PyTorch modules (the function it computes is unchanged)."""
    from safetensors.torch import load_file

    from compress.checkpoint import read_manifest
    from compress.pipeline import _dense_recipe, build_model, export_dense
    from compress.spec import Recipe

    manifest = read_manifest(path)
    recipe = _dense_recipe(Recipe.model_validate(manifest["recipe"]))
    model = build_model(recipe, manifest.get("sizes", {}))
    with tempfile.TemporaryDirectory() as directory:
        if dense_path is None:
            dense_path = export_dense(path, Path(directory) / DENSE_NAME)
        model.load_state_dict(load_file(str(dense_path)))
    return model.eval(), manifest


class _Tagger(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        model = self.model
        output, _ = model.rnn(model.embedding(tokens))
        return model.output(torch.tanh(model.hidden(output)))


class _LanguageModel(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)[0]


def _onnx_inputs(task: str, model: nn.Module, manifest: dict):
    """(module to trace, example inputs, input names, output name, dynamic axes) for the task."""
    recipe = manifest["recipe"]
    if task in ("language_model", "sequence_tagging"):
        tokens = torch.zeros(5, 2, dtype=torch.long)
        wrapper = _LanguageModel(model) if task == "language_model" else _Tagger(model)
        output = "logits" if task == "language_model" else "tag_logits"
        axes = {"tokens": {0: "steps", 1: "batch"}, output: {0: "steps", 1: "batch"}}
        return wrapper, (tokens,), ["tokens"], output, axes
    steps = 5
    if task == "navigation":
        cells = recipe["task"]["place_cells"]
        inputs = (torch.zeros(2, steps, 2), torch.zeros(2, cells))
        axes = {
            "velocity": {0: "batch", 1: "steps"},
            "start_code": {0: "batch"},
            "place_logits": {0: "batch", 1: "steps"},
        }
        return model, inputs, ["velocity", "start_code"], "place_logits", axes
    axes = {"inputs": {0: "batch", 1: "steps"}, "prediction": {0: "batch"}}
    return model, (torch.zeros(2, steps, 2),), ["inputs"], "prediction", axes


def export_onnx(path: str | Path, out: str | Path, *, dense_path: str | Path | None = None) -> Path:
    """Write the checkpoint's dense equivalent as ONNX (opset :data:`ONNX_OPSET`) to ``out``."""
    model, manifest = dense_model(path, dense_path)
    task = manifest["recipe"]["task"]["type"]
    module, inputs, names, output, axes = _onnx_inputs(task, model, manifest)
    out = Path(out)
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation and warns that traced RNNs with batch > 1 assume equal
        # lengths: both known (see the module docstring).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            inputs,
            str(out),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
        )
    return out
