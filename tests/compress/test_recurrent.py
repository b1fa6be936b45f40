"""Predefined-sparse recurrent layers against PyTorch's dense layers loaded with their dense equivalents.

The independent reference is ``torch.nn.LSTM``/``GRU``/``RNN`` itself: if the sparse layer is what it claims to be
(k small dense layers side by side), a dense PyTorch layer holding the block-structured weights must compute exactly
the same outputs, final states and input gradients.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from compress.predefined import SparseGRU, SparseLSTM, SparseRNN
from tests.helpers.recurrent import CELLS, make_pair, run


def assert_same(sparse, dense, x, hx=None, tol=1e-8):
    out_s, states_s, grad_s = run(sparse, x, hx)
    out_d, states_d, grad_d = run(dense, x, hx)
    torch.testing.assert_close(out_s, out_d, atol=tol, rtol=0)
    for s, d in zip(states_s, states_d, strict=True):
        torch.testing.assert_close(s, d, atol=tol, rtol=0)
    torch.testing.assert_close(grad_s, grad_d, atol=tol, rtol=0)


CONFIGS = [
    # (input, hidden, components, density, layers, bidirectional)
    (12, 12, 1, 1.0, 1, False),
    (12, 16, 2, 0.5, 1, False),
    (13, 17, 3, 0.5, 2, False),  # k divides neither size: unequal segments, windows overlap
    (20, 24, 4, 0.25, 2, True),  # windows exactly tile the input
    (9, 10, 5, 0.6, 3, True),
    (16, 16, [2, 4], [1.0, 0.5], 2, True),  # per-layer k and delta
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("n_in", "n_hid", "k", "delta", "layers", "bidirectional"), CONFIGS)
@pytest.mark.parametrize("formulation", ["loop", "masked"])
def test_matches_dense_pytorch_layer(cell, n_in, n_hid, k, delta, layers, bidirectional, formulation):
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
    x = torch.randn(7, 3, n_in, dtype=torch.float64)
    assert_same(sparse, dense, x)


@pytest.mark.parametrize("cell", CELLS)
def test_given_initial_state_and_batch_first(cell):
    sparse, dense = make_pair(
        cell, 10, 12, components=3, input_density=0.5, num_layers=2, bidirectional=True, batch_first=True
    )
    x = torch.randn(4, 6, 10, dtype=torch.float64)  # (batch, time, features)
    h0 = torch.randn(4, 4, 12, dtype=torch.float64)
    hx = (h0, torch.randn_like(h0)) if cell == "lstm" else h0
    assert_same(sparse, dense, x, hx)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_unbatched_input(cell):
    sparse, dense = make_pair(cell, 8, 12, components=2, input_density=0.5)
    x = torch.randn(5, 8, dtype=torch.float64)
    out_s, state_s = sparse(x)
    out_d, state_d = dense(x)
    assert out_s.shape == (5, 12)
    torch.testing.assert_close(out_s, out_d, atol=1e-10, rtol=0)
    state_s = state_s if isinstance(state_s, tuple) else (state_s,)
    state_d = state_d if isinstance(state_d, tuple) else (state_d,)
    for s, d in zip(state_s, state_d, strict=True):
        assert s.shape == (1, 12)
        torch.testing.assert_close(s, d, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("cell", "formulation"), list(itertools.product(["lstm", "gru"], ["loop", "masked"])))
def test_packed_sequences_of_different_lengths(cell, formulation):
    sparse, dense = make_pair(
        cell, 10, 12, components=3, input_density=0.5, num_layers=2, bidirectional=True, formulation=formulation
    )
    lengths = torch.tensor([3, 7, 5])  # unsorted: exercises the sorted/unsorted index bookkeeping
    x = torch.randn(7, 3, 10, dtype=torch.float64)
    results = []
    for layer in (sparse, dense):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, state = layer(packed)
        padded, out_lengths = pad_packed_sequence(out)
        results.append((padded, state, out_lengths))
    (pad_s, state_s, len_s), (pad_d, state_d, len_d) = results
    assert torch.equal(len_s, len_d)
    torch.testing.assert_close(pad_s, pad_d, atol=1e-10, rtol=0)
    state_s = state_s if isinstance(state_s, tuple) else (state_s,)
    state_d = state_d if isinstance(state_d, tuple) else (state_d,)
    for s, d in zip(state_s, state_d, strict=True):
        torch.testing.assert_close(s, d, atol=1e-10, rtol=0)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    layer = SparseLSTM(8, 8, num_layers=2, dropout=0.5, components=2).double()
    x = torch.randn(5, 2, 8, dtype=torch.float64)
    layer.eval()
    first, _ = layer(x)
    second, _ = layer(x)
    assert torch.equal(first, second)
    layer.train()
    noisy, _ = layer(x)
    assert not torch.allclose(noisy, first)


def segment_of(hidden_size, components):
    """Independent even split: unit i belongs to the segment whose [start, end) contains it."""
    bounds = [round(c * hidden_size / components) for c in range(components + 1)]
    sizes = sorted((bounds[c + 1] - bounds[c] for c in range(components)), reverse=True)
    owner = []
    for c, size in enumerate(sizes):
        owner += [c] * size
    return owner


@settings(max_examples=40, deadline=None)
@given(
    cell=st.sampled_from(sorted(CELLS)),
    n_in=st.integers(1, 40),
    n_hid=st.integers(1, 40),
    k=st.integers(1, 8),
    extra_density=st.floats(0, 1),
    bidirectional=st.booleans(),
)
def test_mask_structure_and_parameter_count(cell, n_in, n_hid, k, extra_density, bidirectional):
    k = min(k, n_hid)
    delta = 1 / k + extra_density * (1 - 1 / k)
    sparse_cls, _, extra = CELLS[cell]
    layer = sparse_cls(
        n_in, n_hid, num_layers=2, bidirectional=bidirectional, components=k, input_density=delta, **extra
    )
    equivalent = layer.dense_equivalent()
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)
    owner = segment_of(n_hid, k)
    total_mask = 0
    for name, (weight, mask) in equivalent.items():
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert torch.all(weight[mask == 0] == 0)
        total_mask += int(mask.sum())
        if name.startswith("weight_hh"):
            expected = torch.tensor([[float(owner[i] == owner[j]) for j in range(n_hid)] for i in range(n_hid)])
            torch.testing.assert_close(mask, expected.repeat(gates, 1))
        elif name.startswith("weight_ih"):
            width = mask.shape[1]
            runs = []
            for row in mask:
                kept = row.nonzero().flatten().tolist()
                assert kept == list(range(kept[0], kept[-1] + 1)), "input window must be contiguous"
                runs.append((kept[0], len(kept)))
            lengths = {length for _, length in runs}
            assert len(lengths) == 1, "all windows have the same length"
            (length,) = lengths
            # floor(delta * n_in), lengthened only where needed to leave no gap between k windows
            assert math.floor(delta * width + 1e-9) <= length <= max(math.floor(delta * width + 1e-9), -(-width // k))
            assert mask.sum(0).min() >= 1, "every input feature is read by some component"
            starts = sorted({start for start, _ in runs})
            assert starts[0] == 0
            assert starts[-1] + length == width, "the last window ends at the last input feature"
            for g in range(gates):  # the same window for every gate of a unit
                torch.testing.assert_close(mask[g * n_hid : (g + 1) * n_hid], mask[:n_hid])
        else:
            assert torch.all(mask == 1)
    assert sum(p.numel() for p in layer.parameters()) == total_mask
    # The dense size from the layout alone equals the materialised dense equivalent.
    assert layer.dense_parameter_count() == sum(weight.numel() for weight, _ in equivalent.values())


def test_window_length_follows_density():
    layer = SparseLSTM(1725, 1725, components=3, input_density=0.5552)
    (_, mask) = layer.dense_equivalent()["weight_ih_l0"]
    assert int(mask[0].sum()) == int(0.5552 * 1725)  # floor(delta * n_in) = 957


@pytest.mark.parametrize("optimizer_cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_trains_like_a_masked_dense_layer(optimizer_cls):
    """A second way to train the same sparse model: a dense layer whose gradients and weights are masked each step.

    Both must stay equal step after step, and the entries outside the pattern must stay exactly zero.
    """
    sparse, dense = make_pair("lstm", 10, 12, components=3, input_density=0.5, num_layers=2)
    masks = {name: m for name, (_, m) in sparse.dense_equivalent().items()}
    kwargs = {"lr": 0.05, "weight_decay": 0.01} if optimizer_cls is not torch.optim.SGD else {"lr": 0.1}
    opt_s = optimizer_cls(sparse.parameters(), **kwargs)
    opt_d = optimizer_cls(dense.parameters(), **kwargs)
    torch.manual_seed(1)
    for _ in range(5):
        x = torch.randn(6, 4, 10, dtype=torch.float64)
        target = torch.randn(6, 4, 12, dtype=torch.float64)
        for layer, opt in ((sparse, opt_s), (dense, opt_d)):
            opt.zero_grad()
            loss = ((layer(x)[0] - target) ** 2).mean()
            loss.backward()
            if layer is dense:
                for name, p in dense.named_parameters():
                    p.grad *= masks[name]
            opt.step()
    for name, (weight, mask) in sparse.dense_equivalent().items():
        torch.testing.assert_close(weight, getattr(dense, name).detach(), atol=1e-10, rtol=0)
        assert torch.all(weight[mask == 0] == 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"components": 4, "input_density": 0.2}, "at least 1/components"),
        ({"components": 20}, "cannot exceed hidden_size"),
        ({"components": 0}, "components must be >= 1"),
        ({"input_density": 1.5}, r"input_density must be in \(0, 1\]"),
        ({"components": [2, 2]}, "components has 2 entries but num_layers is 1"),
        ({"formulation": "fast"}, "formulation must be"),
        ({"dropout": 1.0}, "dropout must be"),
    ],
)
def test_impossible_configurations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparseLSTM(16, 16, **kwargs)


def test_wrong_inputs_are_refused_with_clear_messages():
    layer = SparseGRU(8, 6, components=2)
    with pytest.raises(ValueError, match="input has 5 features, expected input_size=8"):
        layer(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match=r"initial state has shape \(1, 3, 6\), expected \(1, 2, 6\)"):
        layer(torch.randn(3, 2, 8), torch.zeros(1, 3, 6))
    with pytest.raises(ValueError, match="2 \\(unbatched\\) or 3 dimensions"):
        layer(torch.randn(3, 2, 8, 1))
    with pytest.raises(ValueError, match="nonlinearity"):
        SparseRNN(8, 6, nonlinearity="sigmoid")


def test_state_dict_round_trip_uses_component_names():
    layer = SparseLSTM(8, 10, num_layers=2, bidirectional=True, components=2, input_density=0.5)
    names = set(layer.state_dict())
    assert {"weight_ih_l0_c0", "weight_hh_l1_reverse_c1", "bias_hh_l0_c1"} <= names
    clone = SparseLSTM(8, 10, num_layers=2, bidirectional=True, components=2, input_density=0.5)
    clone.load_state_dict(layer.state_dict())
    x = torch.randn(4, 2, 8)
    torch.testing.assert_close(clone(x)[0], layer(x)[0])


def test_auto_formulation_follows_the_measured_rule():
    """CPU: the loop. CUDA: masked while G*H*(n_in+H)/k <= CUDA_MASKED_MAX_ENTRIES (hand-computed sizes below)."""
    from compress.predefined.recurrent import CUDA_MASKED_MAX_ENTRIES

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    small = SparseLSTM(650, 2288, components=8, input_density=0.125, device="meta")  # 4*2288*2938/8 = 3.36M
    large = SparseLSTM(1500, 2342, components=2, input_density=0.5, device="meta")  # 4*2342*3842/2 = 17.99M
    assert 4 * 2288 * 2938 / 8 <= CUDA_MASKED_MAX_ENTRIES < 4 * 2342 * 3842 / 2
    assert small._resolved_formulation(cuda) == "masked"
    assert large._resolved_formulation(cuda) == "loop"
    assert small._resolved_formulation(cpu) == large._resolved_formulation(cpu) == "loop"
    pinned = SparseLSTM(650, 2288, components=8, input_density=0.125, formulation="loop", device="meta")
    assert pinned._resolved_formulation(cuda) == "loop"
