"""The CUDA path: skipped where no GPU is present (CI), run on a lent GPU machine (see benchmarks/README.md).

The references are computed on the CPU: PyTorch's dense layers loaded with the sparse layer's dense equivalent
(float64), so a bad cuDNN weight layout or a tensor left on the wrong device shows up as a difference or an error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import compress
from compress.predefined import SparseLSTM
from compress.spec import Recipe
from compress.synthetic import tagging_corpus, write_conll
from compress.train import Callbacks
from tests.helpers.recurrent import CELLS, make_pair, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FORMULATIONS = ["auto", "loop", "masked"]
CONFIGS = [
    # (input, hidden, components, density, layers, bidirectional)
    (12, 16, 2, 0.5, 1, False),
    (13, 17, 3, 0.5, 2, False),
    (20, 24, 4, 0.25, 2, True),
    (16, 16, [2, 4], [1.0, 0.5], 2, True),
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("n_in", "n_hid", "k", "delta", "layers", "bidirectional"), CONFIGS)
@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_cuda_layer_matches_dense_cpu_reference(cell, n_in, n_hid, k, delta, layers, bidirectional, formulation):
    sparse, dense = make_pair(
        cell,
        n_in,
        n_hid,
        components=k,
        input_density=delta,
        num_layers=layers,
        bidirectional=bidirectional,
        formulation=formulation,
    )
    x = torch.randn(9, 4, n_in, dtype=torch.float64)
    out_d, states_d, grad_d = run(dense, x)
    sparse = sparse.cuda()
    out_s, states_s, grad_s = run(sparse, x.cuda())
    torch.testing.assert_close(out_s.cpu(), out_d, atol=1e-8, rtol=0)
    for s, d in zip(states_s, states_d, strict=True):
        torch.testing.assert_close(s.cpu(), d, atol=1e-8, rtol=0)
    torch.testing.assert_close(grad_s.cpu(), grad_d, atol=1e-8, rtol=0)


@pytest.mark.parametrize("formulation", ["auto", "loop", "masked"])
def test_parameter_gradients_agree_across_formulations(formulation):
    """Weight gradients (not only input gradients) through every formulation equal the loop's on the CPU."""
    torch.manual_seed(0)
    cpu = SparseLSTM(24, 40, components=4, input_density=0.5, num_layers=2, formulation="loop").double()
    gpu = SparseLSTM(24, 40, components=4, input_density=0.5, num_layers=2, formulation=formulation).double()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    x = torch.randn(15, 6, 24, dtype=torch.float64)
    (cpu(x)[0] ** 2).sum().backward()
    (gpu(x.cuda())[0] ** 2).sum().backward()
    for (name, p_cpu), (_, p_gpu) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-8, rtol=0, msg=name)


def test_weights_are_flattened_for_cudnn_and_stay_trainable():
    """After .cuda() the loop's cuDNN calls read each component in place (no 'not part of single contiguous chunk'
    copy), and an optimizer still updates the same parameter objects (they are views into the flat buffer now)."""
    torch.manual_seed(0)
    layer = SparseLSTM(32, 64, components=4, input_density=0.5, num_layers=2, bidirectional=True, formulation="loop")
    before = {name: p for name, p in layer.named_parameters()}
    layer = layer.cuda()
    assert all(p is before[name] for name, p in layer.named_parameters())
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(10, 3, 32, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the non-contiguous-weights UserWarning would fail the test
        loss = layer(x)[0].square().mean()
        loss.backward()
    snapshot = {name: p.detach().clone() for name, p in layer.named_parameters()}
    optimizer.step()
    changed = [name for name, p in layer.named_parameters() if not torch.equal(p, snapshot[name])]
    assert len(changed) == len(snapshot)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        after = layer(x)[0].square().mean().item()
    assert after != loss.item()


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    """LM and tagging files from the synthetic HMM corpus (no dataset download on a GPU machine)."""
    directory = tmp_path_factory.mktemp("cuda-data")
    corpus = tagging_corpus(160, vocab_size=200, tags=6, seed=3)
    write_conll(directory / "train.conll", corpus[:130])
    write_conll(directory / "valid.conll", corpus[130:])
    sentences = [" ".join(words) for words, _ in corpus]
    (directory / "train.txt").write_text("\n".join(sentences[:130]) + "\n")
    (directory / "valid.txt").write_text("\n".join(sentences[130:]) + "\n")
    return {
        "language_model": {"train": directory / "train.txt", "valid": directory / "valid.txt"},
        "sequence_tagging": {"train": directory / "train.conll", "valid": directory / "valid.conll"},
    }


@pytest.mark.parametrize(
    ("task", "model", "method", "metric"),
    [
        (
            {"type": "language_model", "max_vocab": 300},
            {"cell": "lstm", "embedding_size": 16, "hidden_size": 24},
            {
                "type": "predefined",
                "recurrent": {"components": 2, "input_density": 0.5},
                "embedding": {"blocks": 4, "density": 0.5},
            },
            "valid_perplexity",
        ),
        (
            {"type": "sequence_tagging"},
            {"cell": "gru", "embedding_size": 12, "hidden_size": 12, "bidirectional": True},
            {"type": "predefined", "recurrent": {"components": 3, "input_density": 0.5}},
            "valid_accuracy",
        ),
        (
            {"type": "navigation", "place_cells": 24, "sequence_length": 8, "steps_per_epoch": 6},
            {"cell": "rnn_relu", "hidden_size": 32},
            {"type": "moduli_pruning", "target_sparsity": 0.8, "space": "klein", "lottery_check": True},
            "valid_position_error_cm",
        ),
    ],
    ids=["lm-predefined", "tagging-predefined", "navigation-moduli"],
)
def test_run_on_cuda_and_reload_on_cpu(task, model, method, metric, text_data, tmp_path):
    """compress.run trains on the GPU; its checkpoint reloads on a CPU-only consumer with the trained weights."""
    recipe = Recipe.model_validate(
        {
            "task": task,
            "model": model,
            "method": method,
            "training": {"epochs": 2, "batch_size": 8, "bptt": 20, "lr": 3e-3},
        }
    )
    messages = []
    callbacks = Callbacks(event=lambda level, kind, message, data: messages.append(message))
    result = compress.run(recipe, text_data.get(task["type"], {}), callbacks, output_dir=tmp_path, device="cuda")
    assert np.isfinite(result.metrics[metric])
    assert any(message.endswith("parameters on cuda") for message in messages), messages
    loaded, manifest = compress.load_checkpoint(result.checkpoint, device="cpu")
    assert manifest["metrics"][metric] == pytest.approx(result.metrics[metric])
    for (name, trained), (_, reloaded) in zip(
        result.model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(trained.cpu(), reloaded), name


def test_masked_formulation_does_not_show_cudnns_flatten_advice():
    layer = SparseLSTM(32, 64, components=4, input_density=0.5, formulation="masked").cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.randn(10, 3, 32, device="cuda"))[0].sum().backward()
