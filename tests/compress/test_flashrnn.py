"""The predefined layer on flashrnn's block-diagonal ("multi-head") kernels.

On CPU: the gate and bias mapping is checked against flashrnn's own PyTorch reference (its ``vanilla`` backend), where
the package is installed (the optional ``gpu`` extra; skipped otherwise). On CUDA (skipped without a GPU): the fused
kernels against the CPU loop formulation, forward and gradients, and the runtime on CUDA against the CPU model.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from compress.predefined import SparseGRU, SparseLSTM, SparseRNN, flashrnn_kernel

HAS_FLASHRNN = importlib.util.find_spec("flashrnn") is not None
CUDA = torch.cuda.is_available() and HAS_FLASHRNN
LAYERS = {
    "lstm": lambda **kw: SparseLSTM(12, 16, **kw),
    "gru": lambda **kw: SparseGRU(12, 16, **kw),
    "rnn_tanh": lambda **kw: SparseRNN(12, 16, nonlinearity="tanh", **kw),
}


def _pair(cell: str, bidirectional: bool, device: str = "cpu"):
    torch.manual_seed(0)
    options = {"num_layers": 2, "bidirectional": bidirectional, "components": 4, "input_density": 0.5}
    reference = LAYERS[cell](formulation="loop", **options)
    fast = LAYERS[cell](formulation="flashrnn", **options)
    fast.load_state_dict(reference.state_dict())
    return reference, fast.to(device)


def _inputs(cell: str, bidirectional: bool):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, 12, generator=generator)
    shape = (4 if bidirectional else 2, 3, 16)
    h0 = torch.randn(shape, generator=generator) * 0.5
    state = (h0, torch.randn(shape, generator=generator) * 0.5) if cell == "lstm" else h0
    return x, state


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.skipif(not HAS_FLASHRNN, reason="the optional flashrnn package is not installed")
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", list(LAYERS))
def test_mapping_matches_flashrnns_own_reference(cell, bidirectional):
    reference, fast = _pair(cell, bidirectional)
    x, state = _inputs(cell, bidirectional)
    expected, expected_state = reference(x, state)
    output, finals = flashrnn_kernel.forward(fast, x, _flat(state), backend="vanilla")
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-4)
    for got, want in zip(finals, _flat(expected_state), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # gradients flow to the components' own parameters, as training needs
    (expected.sum() + sum(s.sum() for s in _flat(expected_state))).backward()
    (output.sum() + sum(f.sum() for f in finals)).backward()
    for (name, want), got in zip(reference.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_flashrnn_is_refused_with_its_reason_where_it_cannot_run():
    layer = SparseLSTM(12, 16, components=4, input_density=0.5, formulation="flashrnn")
    with pytest.raises(ValueError, match="formulation 'flashrnn': flashrnn needs CUDA"):
        layer(torch.randn(3, 2, 12))
    cuda = torch.device("cuda")
    relu = SparseRNN(12, 16, nonlinearity="relu", components=4, input_density=0.5)
    uneven = SparseLSTM(12, 17, components=4, input_density=0.5)
    if HAS_FLASHRNN:
        assert flashrnn_kernel.unsupported_reason(relu, cuda) == "flashrnn has no rnn_relu cell"
        assert "unequal size" in flashrnn_kernel.unsupported_reason(uneven, cuda)
        assert "lengths" in flashrnn_kernel.unsupported_reason(layer, cuda, packed=True)
    else:
        assert "not installed" in flashrnn_kernel.unsupported_reason(relu, cuda)
    # "auto" never picks it unmeasured, and never on CPU
    assert SparseLSTM(12, 16, components=4, input_density=0.5)._resolved_formulation(cuda) != "flashrnn"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device and the flashrnn package")
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", list(LAYERS))
def test_cuda_kernels_match_the_cpu_reference(cell, bidirectional):
    reference, fast = _pair(cell, bidirectional, "cuda")
    x, state = _inputs(cell, bidirectional)
    expected, expected_state = reference(x, state)
    cuda_state = tuple(s.cuda() for s in state) if isinstance(state, tuple) else state.cuda()
    output, finals = fast(x.cuda(), cuda_state)
    torch.testing.assert_close(output.cpu(), expected, atol=2e-4, rtol=1e-3)
    for got, want in zip(_flat(finals), _flat(expected_state), strict=True):
        torch.testing.assert_close(got.cpu(), want, atol=2e-4, rtol=1e-3)
    expected.sum().backward()
    output.sum().backward()
    for (name, want), got in zip(reference.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(got.grad.cpu(), want.grad, atol=1e-3, rtol=1e-2, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runtime_on_cuda_matches_the_cpu_model(tmp_path):
    from compress import runtime
    from compress.pipeline import build_model, load_checkpoint, save_checkpoint
    from compress.spec import Recipe

    for method in ({"type": "predefined", "recurrent": {"components": 4, "input_density": 0.25}},
                   {"type": "magnitude_pruning"}):  # fmt: skip
        spec = {"cell": "lstm", "embedding_size": 64, "hidden_size": 64}
        recipe = Recipe.model_validate({"task": {"type": "language_model"}, "model": spec, "method": method})
        model = build_model(recipe, {"vocab_size": 50})
        if method["type"] != "predefined":
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() == 2:
                        p.mul_((torch.rand(p.shape) > 0.9).float())
        path = tmp_path / "model.safetensors"
        save_checkpoint(path, model, recipe, sizes={"vocab_size": 50})
        reference = load_checkpoint(path)[0].eval()
        tokens = torch.randint(0, 50, (9, 2))
        with torch.no_grad():
            expected = reference(tokens)[0]
        for force in (None, "dense", "csr", "block"):
            fast = runtime.load(path, "cuda", force=force, budget_s=0.002)
            torch.testing.assert_close(fast(tokens.cuda())[0].cpu(), expected, atol=1e-4, rtol=1e-3)
        print(fast.plan()["modules"])
