"""The parameter planner against METHODS.md's worked AWD-LSTM example and against counted parameters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from compress.predefined import SparseGRU, SparseLSTM, SparseRNN, dense_parameter_count, plan_recurrent

LAYERS = {"lstm": (SparseLSTM, nn.LSTM), "gru": (SparseGRU, nn.GRU), "rnn_tanh": (SparseRNN, nn.RNN)}


def test_awd_lstm_worked_example():
    """METHODS.md: dense 400-1150-1150-400 vs sparse 400-1725-1725-400 (hidden x1.5, fraction 2/3)."""
    layers = [(400, 1725, 1.0, 2 / 3), (1725, 1725, 2 / 3, 2 / 3), (1725, 400, 2 / 3, 1.0)]
    plans = [plan_recurrent("lstm", *sizes) for sizes in layers]
    assert [p.components for p in plans] == [3, 3, 2]
    assert [round(p.input_density, 3) for p in plans] == [1.0, 0.555, 0.783]
    assert plans[0].clipped and not plans[1].clipped
    assert [(p.dense_input_size, p.dense_hidden_size) for p in plans] == [(400, 1150), (1150, 1150), (1150, 400)]
    # Count the parameters of real layers rather than trusting the plan's own arithmetic.
    sparse_total = sum(
        sum(
            t.numel()
            for t in SparseLSTM(
                p.input_size, p.hidden_size, components=p.components, input_density=p.input_density
            ).parameters()
        )
        for p in plans
    )
    dense_total = sum(
        sum(t.numel() for t in nn.LSTM(p.dense_input_size, p.dense_hidden_size).parameters()) for p in plans
    )
    assert round(sparse_total / 1e6, 2) == 19.81
    assert round(dense_total / 1e6, 2) == 20.21
    assert sum(p.sparse_parameters for p in plans) == sparse_total
    assert sum(p.dense_parameters for p in plans) == dense_total


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_dense_parameter_count_matches_pytorch(cell):
    _, dense_cls = LAYERS[cell]
    assert dense_parameter_count(cell, 37, 53) == sum(p.numel() for p in dense_cls(37, 53).parameters())
    assert dense_parameter_count(cell, 37, 53, bias=False) == sum(
        p.numel() for p in dense_cls(37, 53, bias=False).parameters()
    )


@settings(max_examples=60, deadline=None)
@given(
    cell=st.sampled_from(sorted(LAYERS)),
    n_in=st.integers(8, 600),
    n_hid=st.integers(8, 600),
    in_factor=st.floats(0.3, 1.0),
    out_factor=st.floats(0.3, 1.0),
)
def test_plan_matches_the_dense_budget(cell, n_in, n_hid, in_factor, out_factor):
    try:
        plan = plan_recurrent(cell, n_in, n_hid, in_factor, out_factor)
    except ValueError as error:
        assert "components" in str(error) or "budget" in str(error)
        return
    gates = {"lstm": 4, "gru": 3}.get(cell, 1)
    k, delta = plan.components, plan.input_density
    assert 1 / k - 1e-9 <= delta <= 1
    # Minimality: with one component fewer, the density the budget allows would fall below 1/(k-1).
    if k > 1:
        room = in_factor * out_factor * n_in + out_factor**2 * n_hid + 2 * out_factor - 2
        assert (room - n_hid / (k - 1)) / n_in < 1 / (k - 1)
    sparse_cls, _ = LAYERS[cell]
    counted = sum(p.numel() for p in sparse_cls(n_in, n_hid, components=k, input_density=delta).parameters())
    assert counted == plan.sparse_parameters
    if not plan.clipped:
        # Equal up to rounding, per gate: the window floor and its no-gap clamp (< 1 input per unit: n_hid), uneven
        # segments (sum h_c^2 - H^2/k <= k/4), and the dense sizes rounded to integers (<= 1.5*n_hid + n_in/2 + 2).
        assert abs(counted - plan.dense_parameters) <= gates * (3 * n_hid + n_in + k + 2)
    else:
        assert counted <= plan.dense_parameters


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lstm", 100, 100, 1.5, 1.0), "in_factor and out_factor must be in"),
        (("cnn", 100, 100, 0.5, 0.5), "cell must be one of"),
        (("lstm", 4, 2, 0.1, 0.1), "components|budget"),
    ],
)
def test_refuses_impossible_plans(args, message):
    with pytest.raises(ValueError, match=message):
        plan_recurrent(*args)
