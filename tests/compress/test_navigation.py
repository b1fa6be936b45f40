"""Navigation task: trajectories, place-cell code, model and metric against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.problems import NavigationConfig, NavigationProblem, NavigationRNN, PlaceCells, simulate_trajectories

SMALL = NavigationConfig(hidden_size=16, place_cells=512, sequence_length=20, batch_size=8)


def test_trajectories_are_seeded_and_stay_in_the_box() -> None:
    first = simulate_trajectories(SMALL, 300, generator=torch.Generator().manual_seed(4))
    again = simulate_trajectories(SMALL, 300, generator=torch.Generator().manual_seed(4))
    other = simulate_trajectories(SMALL, 300, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.position, again.position) and torch.equal(first.velocity, again.velocity)
    assert not torch.equal(first.position, other.position)
    assert first.position.shape == (300, 20, 2) and first.velocity.shape == (300, 20, 2)
    assert first.position.abs().max() <= 1.1 and first.start.abs().max() <= 1.1


def test_velocities_integrate_to_positions() -> None:
    paths = simulate_trajectories(SMALL, 500, generator=torch.Generator().manual_seed(0))
    integrated = paths.start[:, None] + paths.velocity.cumsum(1)
    # Wall avoidance turns agents before they leave; only the rare clamp at the wall can break the sum.
    exact = (integrated - paths.position).abs().amax(dim=(1, 2)) < 1e-5
    assert exact.float().mean() > 0.9


def test_speeds_are_rayleigh() -> None:
    config = NavigationConfig(sequence_length=50)
    paths = simulate_trajectories(config, 2000, generator=torch.Generator().manual_seed(1))
    speed = paths.velocity.norm(dim=-1) / config.dt
    scale = 0.13 * 2 * math.pi
    # Rayleigh(scale): median scale * sqrt(2 ln 2) = 0.962 m/s; wall slow-downs pull it down a little.
    assert speed.median().item() == pytest.approx(scale * math.sqrt(2 * math.log(2)), rel=0.05)
    assert speed.min() >= 0


def test_place_cell_code_by_hand() -> None:
    config = NavigationConfig(place_cells=3, decode_top_k=1)
    cells = PlaceCells(config)
    cells.centres = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.5, 0.5]])
    position = torch.tensor([0.02, 0.0])
    d2 = [0.02**2, 0.08**2, 0.48**2 + 0.5**2]
    narrow = [math.exp(-x / (2 * 0.12**2)) for x in d2]
    wide = [math.exp(-x / (2 * 0.24**2)) for x in d2]
    dog = [n / sum(narrow) - w / sum(wide) for n, w in zip(narrow, wide, strict=True)]
    shifted = [x - min(dog) for x in dog]
    expected = torch.tensor([x / sum(shifted) for x in shifted])
    assert torch.allclose(cells.code(position), expected, atol=1e-6)


def test_decoding_takes_the_mean_of_the_top_three_centres() -> None:
    config = NavigationConfig(place_cells=5)
    cells = PlaceCells(config)
    cells.centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.5, 0.5]])
    activity = torch.tensor([[0.1, 3.0, 2.0, -4.0, 1.0]])  # top 3: cells 1, 2, 4
    assert torch.allclose(cells.decode(activity), torch.tensor([[0.5, 0.5]]))


def test_the_paper_code_decodes_to_within_a_few_centimetres() -> None:
    task = NavigationProblem(NavigationConfig(hidden_size=8, sequence_length=10), seed=0)
    _, _, targets, position = task.batch(100)
    # The metric's own floor with 512 cells: decoding the exact targets is a few cm off (cell spacing ~10 cm).
    assert task.position_error_cm(targets, position).item() < 8.0


def test_model_is_the_bias_free_relu_rnn_started_from_the_place_code() -> None:
    torch.manual_seed(0)
    model = NavigationRNN(SMALL)
    assert not [name for name, _ in model.named_parameters() if "bias" in name]
    velocity = torch.randn(3, 20, 2) * 0.02
    start = torch.rand(3, 512)
    logits = model(velocity, start)
    # Step by step by hand: h_0 = E s, h_t = relu(W_ih v_t + W_hh h_{t-1}), out_t = D h_t.
    h = start @ model.encoder.weight.T
    for t in range(20):
        h = torch.relu(velocity[:, t] @ model.rnn.weight_ih_l0.T + h @ model.rnn.weight_hh_l0.T)
        assert torch.allclose(logits[:, t], h @ model.decoder.weight.T, atol=1e-5)


def test_loss_is_cross_entropy_to_the_target_distribution() -> None:
    logits = torch.randn(4, 6, 10)
    targets = torch.softmax(torch.randn(4, 6, 10), -1)
    expected = F.cross_entropy(logits.reshape(-1, 10), targets.reshape(-1, 10))
    assert NavigationProblem.loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_input_scales_and_identity_init() -> None:
    config = NavigationConfig(hidden_size=6, place_cells=8, recurrent_init="identity", velocity_input_scale=50.0)
    model = NavigationRNN(config)
    assert torch.equal(model.rnn.weight_hh_l0, torch.eye(6))
    velocity, start = torch.randn(2, 3, 2) * 0.02, torch.rand(2, 8)
    plain = NavigationRNN(NavigationConfig(hidden_size=6, place_cells=8))
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(model(velocity, start), plain(velocity * 50.0, start))
    torch.nn.init.zeros_(model.rnn.weight_hh_l0)
    model.reset_parameters()  # what the lottery's re-initialisation calls: the chosen init again
    assert torch.equal(model.rnn.weight_hh_l0, torch.eye(6))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="place_cells"):
        NavigationConfig(place_cells=0)
    with pytest.raises(ValueError, match="decode_top_k"):
        NavigationConfig(place_cells=2)
    with pytest.raises(ValueError, match="recurrent_init"):
        NavigationConfig(recurrent_init="xavier")


@pytest.mark.slow
def test_a_small_model_learns_to_path_integrate() -> None:
    torch.manual_seed(0)
    config = NavigationConfig(
        hidden_size=128,
        sequence_length=20,
        batch_size=64,
        recurrent_init="identity",
        velocity_input_scale=50.0,
        start_code_scale=50.0,
    )
    task = NavigationProblem(config, seed=0)
    model = task.model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    evaluation = task.batch(200, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = task.position_error_cm(model(evaluation[0], evaluation[1]), evaluation[3]).item()
    for _ in range(300):
        velocity, start, targets, _ = task.batch()
        optimizer.zero_grad()
        task.loss(model(velocity, start), targets).backward()
        optimizer.step()
    with torch.no_grad():
        after = task.position_error_cm(model(evaluation[0], evaluation[1]), evaluation[3]).item()
    assert after < 0.5 * before


@pytest.mark.parametrize("kind", ["identity", "orthogonal"])
def test_recurrent_init_reaches_every_recurrent_layer_kind(kind) -> None:
    """The init acts on each gate block, for the paper's RNN, an LSTM and a predefined-sparse RNN alike; checked on
    the dense-equivalent matrices: identity blocks are exactly eye(H) per gate, orthogonal blocks satisfy Q^T Q = I
    inside each component's block (and zeros elsewhere, for the sparse layer)."""
    from compress.predefined import SparseRNN

    config = NavigationConfig(hidden_size=6, place_cells=8, recurrent_init=kind)
    layers = {
        "rnn": None,
        "lstm": nn.LSTM(2, 6, bias=False, batch_first=True),
        "sparse": SparseRNN(2, 6, nonlinearity="relu", bias=False, batch_first=True, components=2),
    }
    for name, rnn in layers.items():
        model = NavigationRNN(config, rnn)
        torch.nn.init.zeros_(next(p for n, p in model.rnn.named_parameters() if n.startswith("weight_hh")))
        model.reset_parameters()  # what the lottery check's re-initialisation calls
        if name == "sparse":
            dense = model.rnn.dense_equivalent()["weight_hh_l0"][0]
            blocks = [dense[:3, :3], dense[3:, 3:]]
            assert torch.all(dense[:3, 3:] == 0) and torch.all(dense[3:, :3] == 0)
        else:
            weight = model.rnn.weight_hh_l0.detach()
            blocks = list(weight.split(6, dim=0))
        for block in blocks:
            size = block.shape[0]
            if kind == "identity":
                assert torch.equal(block, torch.eye(size))
            else:
                torch.testing.assert_close(block.T @ block, torch.eye(size), atol=1e-5, rtol=0)
