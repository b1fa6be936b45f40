"""compress.runtime: the inference model equals the dense model in every form, every cell, both directions, every
task, whole-batch and streaming; the plan records what runs how; the per-tensor choice never picks a slower form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress import runtime
from compress.checkpoint import read_manifest
from compress.pipeline import build_model, load_checkpoint, save_checkpoint
from compress.predefined import SparseLSTM
from compress.runtime.forms import BlockForm, choose
from compress.runtime.recurrent import by_length, segments_text
from compress.spec import Recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
FORCES = ("dense", "csr", "block", "native", "components", None)
# float32 products summed in another order (CSR, batched blocks) differ from the fused kernels by rounding only.
ATOL, RTOL = 2e-5, 1e-4
PRUNED = {"type": "magnitude_pruning", "target_sparsity": 0.9}
PREDEFINED = {"type": "predefined", "recurrent": {"components": 4, "input_density": 0.5}}


def _prune(model: nn.Module, sparsity: float, seed: int = 0) -> None:
    """Zero a random share of every matrix, as a pruned checkpoint holds it (the runtime reads zeros, not masks)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.mul_((torch.rand(parameter.shape, generator=generator) >= sparsity).float())


def _checkpoint(tmp_path, recipe: dict, sizes: dict, name: str = "model") -> tuple:
    recipe = Recipe.model_validate(recipe)
    torch.manual_seed(0)
    model = build_model(recipe, sizes)
    if recipe.method.type != "predefined":
        _prune(model, 0.9)
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(path, model, recipe, sizes=sizes)
    reference, _ = load_checkpoint(path)
    return path, reference.eval()


def _close(actual, expected) -> None:
    if isinstance(actual, tuple | list):
        for a, e in zip(actual, expected, strict=True):
            _close(a, e)
    else:
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


def _tagger(cell: str, bidirectional: bool, method: dict) -> dict:
    model = {"cell": cell, "embedding_size": 12, "hidden_size": 16, "num_layers": 2, "bidirectional": bidirectional}
    return {"task": {"type": "sequence_tagging"}, "model": model, "method": method}


@pytest.mark.parametrize("force", FORCES)
@pytest.mark.parametrize("method", [PRUNED, PREDEFINED], ids=["pruned", "predefined"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_tagger_matches_the_dense_model(tmp_path, cell, bidirectional, method, force):
    # Two layers, packed sequences of unequal lengths: each direction sees sequences start and end at other steps.
    path, reference = _checkpoint(tmp_path, _tagger(cell, bidirectional, method), {"vocab_size": 50, "num_tags": 5})
    fast = runtime.load(path, force=force, budget_s=0.001)
    tokens = torch.randint(0, 50, (9, 5), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([9, 3, 7, 1, 9])
    with torch.no_grad():
        expected = reference(tokens, lengths)
    _close(fast(tokens, lengths), expected)


def _lm(cell: str, method: dict, tied: bool = False) -> dict:
    model = {"cell": cell, "embedding_size": 24, "hidden_size": 24, "num_layers": 2, "tie_weights": tied}
    return {"task": {"type": "language_model"}, "model": model, "method": method}


@pytest.mark.parametrize("force", FORCES)
@pytest.mark.parametrize("cell", CELLS)
def test_language_model_batch_and_stream_match_the_dense_model(tmp_path, cell, force):
    method = {**PREDEFINED, "embedding": {"blocks": 4, "density": 0.5}}
    for name, recipe in (("pruned", _lm(cell, PRUNED)), ("predefined", _lm(cell, method, tied=True))):
        path, reference = _checkpoint(tmp_path, recipe, {"vocab_size": 40}, name)
        fast = runtime.load(path, force=force, budget_s=0.001)
        tokens = torch.randint(0, 40, (6, 3), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            expected, expected_state = reference(tokens)
        logits, state = fast(tokens)
        _close(logits, expected)
        _close(state, expected_state)
        # streaming, one token at a time, from the state a whole batch left behind
        state, streamed = None, []
        for t in range(tokens.shape[0]):
            step_logits, state = fast.step(tokens[t], state)
            streamed.append(step_logits)
        _close(torch.stack(streamed), expected)
        _close(state, expected_state)


@pytest.mark.parametrize("force", FORCES)
@pytest.mark.parametrize("method", [PRUNED, PREDEFINED], ids=["pruned", "predefined"])
def test_navigation_and_adding_match_the_dense_model(tmp_path, method, force):
    navigation = {
        "task": {"type": "navigation", "place_cells": 20, "sequence_length": 6},
        "model": {"cell": "rnn_relu", "hidden_size": 32},
        "method": method,
    }
    path, reference = _checkpoint(tmp_path, navigation, {}, "navigation")
    fast = runtime.load(path, force=force, budget_s=0.001)
    generator = torch.Generator().manual_seed(3)
    velocity, start = torch.randn(4, 6, 2, generator=generator) * 0.05, torch.rand(4, 20, generator=generator)
    with torch.no_grad():
        expected = reference(velocity, start)
    _close(fast(velocity, start), expected)
    state, streamed = fast.start_state(start), []
    for t in range(6):
        out, state = fast.step(velocity[:, t], state)
        streamed.append(out)
    _close(torch.stack(streamed, 1), expected)

    adding = {"task": {"type": "adding", "sequence_length": 7}, "model": {"cell": "gru", "hidden_size": 16}}
    path, reference = _checkpoint(tmp_path, {**adding, "method": method}, {}, "adding")
    fast = runtime.load(path, force=force, budget_s=0.001)
    inputs = torch.rand(5, 7, 2, generator=generator)
    with torch.no_grad():
        expected = reference(inputs)
    _close(fast(inputs), expected)
    state = None
    for t in range(7):
        out, state = fast.step(inputs[:, t], state)
    _close(out, expected)


def test_stream_matches_plain_torch_rnn_from_the_dense_weights(tmp_path):
    """A second, independent reference: torch.nn.LSTM fed the predefined layer's dense-equivalent weights."""
    path, reference = _checkpoint(tmp_path, _lm("lstm", PREDEFINED), {"vocab_size": 40})
    plain = nn.LSTM(24, 24, num_layers=2)
    plain.load_state_dict({n: w for n, (w, _) in reference.rnn.dense_equivalent().items()})
    fast = runtime.load(path, force="block", budget_s=0.001)
    x = torch.randn(5, 2, 24)
    with torch.no_grad():
        expected, (h, c) = plain(x)
    output, state = fast.model.rnn(x)
    _close(output, expected)
    _close(state, (h, c))
    assert fast.model.rnn.matrix_plans()[1].small == "block"  # the forced form really ran


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("mode", ["LSTM", "RNN_TANH", "RNN_RELU"])
def test_batch1_stream_with_fused_csr_step_matches_torch(mode, bias):
    """At batch 1 a layer whose W_ih and W_hh both run as CSR streams through one [W_ih | W_hh] product with the
    bias added in the same call; torch.nn's own layer on the same weights is the reference."""
    torch.manual_seed(5)
    plain = {"LSTM": nn.LSTM, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}[mode]
    options = {} if mode == "LSTM" else {"nonlinearity": "tanh" if mode == "RNN_TANH" else "relu"}
    layer = plain(20, 24, num_layers=2, bias=bias, **options).eval()
    _prune(layer, 0.9)
    fast = runtime.FastRecurrent(layer, force="csr")
    assert fast.describe()["step_fused_layers"] == [0, 1]
    x = torch.randn(7, 1, 20)
    with torch.no_grad():
        expected, expected_state = layer(x)
    state, outputs = None, []
    for t in range(x.shape[0]):
        out, state = fast.step(x[t], state)
        outputs.append(out)
    _close(torch.stack(outputs), expected)
    _close(state, expected_state)
    _close(fast(x), (expected, expected_state))  # the whole sequence: W_hh's product adds onto the input projection


def test_block_form_is_the_dense_block_diagonal_product():
    generator = torch.Generator().manual_seed(4)
    blocks = [torch.randn(3 * 4, 5, generator=generator) for _ in range(3)]  # GRU: 3 gates, h = 4, L = 5
    starts = [0, 2, 5]
    dense = torch.zeros(3 * 12, 10)
    for c, (block, start) in enumerate(zip(blocks, starts, strict=True)):
        for g in range(3):
            dense[g * 12 + c * 4 : g * 12 + c * 4 + 4, start : start + 5] = block[g * 4 : (g + 1) * 4]
    x = torch.randn(7, 10, generator=generator)
    form = BlockForm(blocks, starts, 3)
    torch.testing.assert_close(form(x), x @ dense.t())
    # the components' own order [c][g][j], bias included: the full product's rows regrouped by component
    bias = torch.randn(3 * 12, generator=generator)
    by_component = (x @ dense.t() + bias).view(7, 3, 3, 4).permute(2, 0, 1, 3).reshape(3, 7, 12)
    torch.testing.assert_close(form.component_major(x, bias), by_component)
    torch.testing.assert_close(
        form.component_major(x, None), by_component - bias.view(3, 3, 4).transpose(0, 1).reshape(3, 1, 12)
    )


def test_block_recurrence_after_a_dense_input_projection_matches_torch(tmp_path):
    """W_hh in its block form with W_ih dense (a mix the measurement can choose): the projection is reordered into
    the components' order once; torch.nn.LSTM on the dense-equivalent weights is the reference."""
    path, reference = _checkpoint(tmp_path, _lm("lstm", PREDEFINED), {"vocab_size": 40})
    plain = nn.LSTM(24, 24, num_layers=2)
    plain.load_state_dict({n: w for n, (w, _) in reference.rnn.dense_equivalent().items()})
    fast = runtime.load(path, force="block", budget_s=0.001)
    for directions in fast.model.rnn.layers:
        for w_ih, *_ in directions:
            w_ih.small = w_ih.large = "dense"
    for batch in (1, 3):
        x = torch.randn(6, batch, 24)
        with torch.no_grad():
            expected = plain(x)
        _close(fast.model.rnn(x), expected)


@pytest.mark.parametrize("input_density", [0.25, 0.6], ids=["tiled", "overlapping"])
@pytest.mark.parametrize("bias", [True, False])
def test_predefined_lstm_block_recurrence_matches_torch_both_directions(bias, input_density):
    """The component-major LSTM step (one sigmoid for all four gates, tanh(g) as 2 sigmoid(2g) - 1) against
    torch.nn.LSTM on the dense-equivalent weights: both directions, a given state (left unchanged), batch 1 and 3,
    and streaming from that state."""
    torch.manual_seed(5)
    sparse = SparseLSTM(16, 32, num_layers=2, bias=bias, bidirectional=True, components=4, input_density=input_density)
    plain = nn.LSTM(16, 32, num_layers=2, bias=bias, bidirectional=True)
    plain.load_state_dict({n: w for n, (w, _) in sparse.dense_equivalent().items()})
    fast = runtime.FastRecurrent(sparse, force="block")
    assert all(d is not None for directions in fast.doubled for d in directions)
    for batch in (1, 3):
        x = torch.randn(7, batch, 16) * 2  # pre-activations well into both tails of the sigmoid and tanh
        state = (torch.randn(4, batch, 32), torch.randn(4, batch, 32))
        given = tuple(s.clone() for s in state)
        with torch.no_grad():
            expected = plain(x, state)
        _close(fast(x, state), expected)
        _close(state, given)
    one_way = SparseLSTM(16, 32, bias=bias, components=4, input_density=input_density)
    plain = nn.LSTM(16, 32, bias=bias)
    plain.load_state_dict({n: w for n, (w, _) in one_way.dense_equivalent().items()})
    fast = runtime.FastRecurrent(one_way, force="block")
    x, state = torch.randn(5, 1, 16), (torch.randn(1, 1, 32), torch.randn(1, 1, 32))
    with torch.no_grad():
        expected, expected_state = plain(x, state)
    streamed = []
    for t in range(5):
        out, state = fast.step(x[t], state)
        streamed.append(out)
    _close(torch.stack(streamed), expected)
    _close(state, expected_state)


def test_choice_is_the_fastest_measured_and_never_slower_than_dense():
    weight = torch.randn(512, 512)
    weight[torch.rand(512, 512) < 0.98] = 0
    plan = choose("w", weight, budget_s=0.002)
    for label, chosen in (("batch1", plan.small), ("batch32", plan.large)):
        timings = plan.timings_us[label]
        assert set(timings) == {"dense", "csr"}
        assert timings[chosen] <= timings["dense"]
        assert chosen == "dense" or timings[chosen] == min(timings.values()) < 0.9 * timings["dense"]
    x = torch.randn(3, 512)
    torch.testing.assert_close(plan(x), x @ weight.t(), atol=ATOL, rtol=RTOL)
    assert choose("w", torch.randn(64, 64)).forms.keys() == {"dense"}  # not sparse: CSR is not even a candidate


def test_the_executor_follows_the_sequence_length_of_each_call():
    """Costs fitted through two lengths, by hand: native 10 ms fixed + 0.5 ms a step, stepwise 0.7 ms a step: equal
    at 50 steps; with the 10% margin stepwise runs while 0.7 T < 0.9 (10 + 0.5 T), i.e. 0.25 T < 9: up to T = 35."""
    timings = {"native": {8: 14_000.0, 16: 18_000.0}, "stepwise": {8: 5_600.0, 16: 11_200.0}}
    segments = by_length(timings, "native")
    assert segments == [(1, "stepwise"), (36, "native")]
    assert segments_text(segments) == "stepwise up to 35 steps, native from 36"
    # a dearer fixed cost for the other executor: native at short lengths, the other from where it is 10% cheaper
    timings = {"native": {8: 8_000.0, 16: 16_000.0}, "other": {8: 9_000.0, 16: 13_000.0}}  # 1000 T vs 5000 + 500 T
    assert by_length(timings, "native") == [(1, "native"), (13, "other")]  # 5000 + 500 T < 900 T from T = 12.5
    # never a negative part: time falling with length (noise) is a fixed cost alone, 9 here; fitted as 10 - T / 8
    # it would undercut x's constant 4 (with the margin) from T = 45 on
    assert by_length({"native": {8: 9.0, 16: 8.0}, "x": {8: 4.0, 16: 4.0}}, "native") == [(1, "x")]

    module = runtime.FastRecurrent(nn.LSTM(8, 8), force="dense")
    module.executors["batch1"] = [(1, "stepwise"), (35, "native")]
    calls = []
    module._run = lambda x, hx: calls.append(("stepwise", x.shape[0]))
    module._run_native = lambda x, hx: calls.append(("native", x.shape[0]))
    for steps in (1, 34, 35, 200):
        module(torch.randn(steps, 1, 8))
    module(torch.randn(40, 8))  # unbatched: 40 steps
    assert calls == [("stepwise", 1), ("stepwise", 34), ("native", 35), ("native", 200), ("native", 40)]


def test_plan_names_every_tensor_and_why(tmp_path):
    path, _ = _checkpoint(tmp_path, _tagger("lstm", True, PREDEFINED), {"vocab_size": 50, "num_tags": 5})
    fast = runtime.load(path, budget_s=0.001)
    plan = fast.plan()
    names = {entry["tensor"] for entry in plan["tensors"]}
    kinds, suffixes = ("weight_ih", "weight_hh"), ("", "_reverse")
    expected = {f"rnn.{k}_l{layer}{s}" for k in kinds for layer in (0, 1) for s in suffixes}
    assert expected | {"embedding", "hidden.weight", "output.weight"} <= names
    assert all(entry["reason"] for entry in plan["tensors"])
    (module,) = plan["modules"]
    measured = module["timings_us"]["batch1"]  # {"32 steps": {executor: us}, "64 steps": {...}}
    assert len(measured) == 2 and all(set(t) == {"native", "stepwise", "components"} for t in measured.values())
    # at each measured length the executor chosen there is the fastest, or native unless another beats it by 10%
    for label, timings in measured.items():
        chosen = fast.model.rnn.executor("batch1", int(label.split()[0]))
        assert chosen == "native" or timings[chosen] == min(timings.values()) < 0.9 * timings["native"], label
    segments = module["executors_by_length"]["batch1"]
    assert segments[0]["from_steps"] == 1 and module["executor_batch1"].startswith(segments[0]["executor"])
    assert plan["threads"] == torch.get_num_threads() and read_manifest(path)["method"] == "predefined"
    with pytest.raises(ValueError, match="bidirectional"):
        fast.step(torch.tensor([1, 2]))
