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

from compress import tasks

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


class TaggerLogits(nn.Module):
    """A tagger's tag logits from its tokens: the ONNX export's module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        model = self.model
        output, _ = model.rnn(model.embedding(tokens))
        return model.output(torch.tanh(model.hidden(output)))


class LanguageModelLogits(nn.Module):
    """A language model's logits from its tokens (its state left out): the ONNX export's module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)[0]


def _onnx_inputs(task: str, model: nn.Module, manifest: dict):
    """(module to trace, example inputs, input names, output name, dynamic axes): the task's definition says."""
    definition = tasks.get(task)
    if definition.onnx_inputs is None:
        raise ValueError(f"the {task} task has no ONNX export")
    return definition.onnx_inputs(model, manifest)


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
