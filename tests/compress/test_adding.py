"""Adding problem: generator, model and loss checked by hand."""

from __future__ import annotations

import pytest
import torch

from compress.problems import CONSTANT_BASELINE_MSE, AddingConfig, AddingRNN, adding_batch, adding_loss


def test_batches_have_one_marker_per_half_and_the_right_sum() -> None:
    inputs, targets = adding_batch(64, 50, generator=torch.Generator().manual_seed(0))
    assert inputs.shape == (64, 50, 2) and targets.shape == (64,)
    values, markers = inputs[..., 0], inputs[..., 1]
    assert torch.all((values >= 0) & (values < 1))
    for b in range(64):
        marked = [t for t in range(50) if markers[b, t] == 1]
        assert len(marked) == 2 and marked[0] < 25 <= marked[1]
        assert markers[b].sum() == 2
        assert targets[b].item() == pytest.approx(values[b, marked[0]].item() + values[b, marked[1]].item())


def test_batches_are_seeded() -> None:
    a = adding_batch(8, 10, generator=torch.Generator().manual_seed(1))
    b = adding_batch(8, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_constant_answer_has_the_baseline_mse() -> None:
    _, targets = adding_batch(40_000, 20, generator=torch.Generator().manual_seed(2))
    mse = adding_loss(torch.ones_like(targets), targets).item()
    assert mse == pytest.approx(CONSTANT_BASELINE_MSE, rel=0.03)
    assert abs(CONSTANT_BASELINE_MSE - 2 / 12) < 1e-15


def test_model_reads_the_last_relu_state() -> None:
    torch.manual_seed(0)
    model = AddingRNN(AddingConfig(hidden_size=128))
    assert model.rnn.nonlinearity == "relu" and model.rnn.hidden_size == 128
    inputs, targets = adding_batch(5, 50)
    predictions = model(inputs)
    h = torch.zeros(5, 128)
    rnn = model.rnn
    for t in range(50):
        h = torch.relu(inputs[:, t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
    assert torch.allclose(predictions, (h @ model.readout.weight.T + model.readout.bias).squeeze(-1), atol=1e-5)
    assert adding_loss(predictions, targets).item() == pytest.approx(((predictions - targets) ** 2).mean().item())


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="sequence_length"):
        AddingConfig(sequence_length=1)


@pytest.mark.slow
def test_a_small_model_beats_the_constant_baseline() -> None:
    torch.manual_seed(0)
    model = AddingRNN(AddingConfig(sequence_length=20, hidden_size=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(1500):
        inputs, targets = adding_batch(64, 20, generator=generator)
        optimizer.zero_grad()
        adding_loss(model(inputs), targets).backward()
        optimizer.step()
    inputs, targets = adding_batch(2000, 20, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert adding_loss(model(inputs), targets).item() < 0.5 * CONSTANT_BASELINE_MSE
