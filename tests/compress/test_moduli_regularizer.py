"""Inhibitors, coefficient matrices and the regularizer, checked against independently written formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compress.moduli import DOG_MAX, ModuliRegularizer, coefficients, distances, inhibit, sample_points
from compress.predefined import SparseGRU, SparseLSTM


def dog_by_hand(d: float) -> float:
    return 100 * (math.exp(-(d**2) / 5) - math.exp(-4 * d**2))


def test_inverted_dog_matches_the_paper_numbers() -> None:
    d = torch.tensor([0.0, 0.888, 2.0, 3.0, 6.0], dtype=torch.float64)
    c = inhibit("dog", d, invert=True)
    # By hand: the peak is at d^2 = ln(20) / 3.8, height 100 (e^{-0.15767} - e^{-3.15344}) = 81.14.
    assert c[0].item() == pytest.approx(81.14, abs=0.01)  # "about 81 at d = 0"
    assert c[1].item() == pytest.approx(0.0, abs=0.01)  # "0 near d = 0.89"
    assert c[2].item() == pytest.approx(81.14 - 44.93, abs=0.02)  # "36 at 2"
    assert c[3].item() == pytest.approx(81.14 - 16.53, abs=0.02)  # "65 at 3"
    assert c[4].item() == pytest.approx(81.14 - 0.07, abs=0.01)  # "about 81 beyond 5"
    # The supremum is the maximum of the hand-written DoG on a fine grid.
    assert max(dog_by_hand(i / 10_000) for i in range(30_000)) == pytest.approx(DOG_MAX, abs=1e-4)


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("dog", dog_by_hand),
        ("gauss", lambda d: 100 * math.exp(-(d**2) / 3)),
        ("ripple", lambda d: 50 + 50 * math.cos(2 * d)),
        ("diffusion", lambda d: d**2),
        ("linear", lambda d: d),
    ],
)
def test_inhibitors_match_their_formulas(name: str, formula) -> None:
    d = torch.linspace(0, 7, 29, dtype=torch.float64)
    expected = torch.tensor([formula(x) for x in d.tolist()], dtype=torch.float64)
    assert torch.allclose(inhibit(name, d, invert=False), expected)


def test_controls_are_what_their_names_say_whatever_the_inversion() -> None:
    # The authors' plain-L1 baseline inverted C = 1 into C = 0 and so regularised nothing.
    for invert in (True, False):
        assert torch.equal(coefficients("torus", 30, "standard", invert=invert, seed=0), torch.ones(30, 30))
        assert torch.equal(coefficients("torus", 30, "none", invert=invert, seed=0), torch.zeros(30, 30))
        assert torch.equal(coefficients("klein", 30, "standard", invert=invert, permute=True), torch.ones(30, 30))


def test_coefficients_are_the_inhibited_distances_of_seeded_points() -> None:
    points = sample_points("klein", 40, seed=5, dtype=torch.float64)
    expected = DOG_MAX - 100 * (
        torch.exp(-(distances("klein", points) ** 2) / 5) - torch.exp(-4 * distances("klein", points) ** 2)
    )
    got = coefficients("klein", 40, "dog", invert=True, seed=5, dtype=torch.float64)
    assert torch.allclose(got, expected)
    assert torch.equal(got, coefficients("klein", 40, "dog", invert=True, seed=5, dtype=torch.float64))


def test_paper_scale_torus_has_few_cheap_pairs() -> None:
    # METHODS.md: on the 10x10 torus only ~4% of pairs cost < 10.
    c = coefficients("torus", 1500, "dog", seed=0)
    assert 0.03 < (c < 10).float().mean().item() < 0.055


def test_permuted_control_keeps_the_values_and_loses_the_geometry() -> None:
    plain = coefficients("torus", 50, "dog", seed=1)
    permuted = coefficients("torus", 50, "dog", seed=1, permute=True)
    assert torch.equal(plain.flatten().sort().values, permuted.flatten().sort().values)
    assert not torch.equal(plain, permuted)
    assert not torch.equal(permuted, permuted.T)


@pytest.mark.parametrize(("cls", "gates"), [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_penalty_and_gradient_match_an_independent_formula(cls, gates: int) -> None:
    torch.manual_seed(0)
    model = cls(5, 7, num_layers=2, bidirectional=True, dtype=torch.float64)
    reg = ModuliRegularizer(model, space="torus", inhibitor="dog", strength=0.1, seed=11, space_scale=1.0)
    reg = reg.double()
    hh = ["weight_hh_l0", "weight_hh_l0_reverse", "weight_hh_l1", "weight_hh_l1_reverse"]
    ih = ["weight_ih_l0", "weight_ih_l0_reverse", "weight_ih_l1", "weight_ih_l1_reverse"]
    # One fresh point set per layer and direction, seeds 11, 12, 13, 14 in that order.
    # The regularizer stores C in float32 (then .double()): round the same way.
    matrices = [coefficients("torus", 7, "dog", seed=11 + g).double() for g in range(4)]

    reg().backward()
    got = {name: getattr(model, name).grad.clone() for name in hh + ih}

    leaves = {name: getattr(model, name).detach().clone().requires_grad_(True) for name in hh + ih}
    expected = 0.1 * sum(
        (c.repeat(gates, 1) * leaves[n].abs()).mean() for n, c in zip(hh, matrices, strict=True)
    ) + 0.1 * sum(leaves[n].abs().mean() for n in ih)
    expected.backward()
    assert reg().item() == pytest.approx(expected.item(), rel=1e-12)
    for name in hh + ih:
        assert torch.allclose(got[name], leaves[name].grad), name
    # Gate tiling: row g*N + i of the LSTM's W_hh is neuron i.
    tiled = reg.coefficients_for("weight_hh_l1")
    assert tiled.shape == (gates * 7, 7)
    assert torch.equal(tiled[(gates - 1) * 7 + 3], matrices[2][3])


@pytest.mark.parametrize("cls", [SparseLSTM, SparseGRU])
def test_predefined_sparse_layer_gets_the_penalty_of_its_dense_equivalent(cls) -> None:
    torch.manual_seed(1)
    sparse = cls(6, 10, components=3, input_density=0.5, dtype=torch.float64)  # hidden slices 4, 3, 3
    dense = (nn.LSTM if cls is SparseLSTM else nn.GRU)(6, 10, dtype=torch.float64)
    dense.load_state_dict({name: w for name, (w, _) in sparse.dense_equivalent().items()})
    kwargs = {"space": "klein", "strength": 0.1, "seed": 3, "space_scale": 1.0}
    sparse_reg = ModuliRegularizer(sparse, **kwargs).double()
    dense_reg = ModuliRegularizer(dense, **kwargs).double()
    assert sparse_reg().item() == pytest.approx(dense_reg().item(), rel=1e-12)

    # The gradient of each component's (G*h, h) tensor is the dense gradient at its rows [gate][unit] and columns.
    sparse_reg().backward()
    dense_reg().backward()
    gates = 4 if cls is SparseLSTM else 3
    layout = sparse.layouts[0]
    for c, (offset, h) in enumerate(zip(layout.hidden_offsets, layout.hidden_sizes, strict=True)):
        rows = torch.cat([torch.arange(g * 10 + offset, g * 10 + offset + h) for g in range(gates)])
        cols = torch.arange(offset, offset + h)
        expected = dense.weight_hh_l0.grad[rows][:, cols]
        assert torch.allclose(getattr(sparse, f"weight_hh_l0_c{c}").grad, expected)


class Navigator(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(12, hidden, bias=False)
        self.rnn = nn.RNN(2, hidden, bias=False)
        self.decoder = nn.Linear(hidden, 12, bias=False)


def test_plain_term_is_configurable() -> None:
    model = Navigator(8)
    everything = ModuliRegularizer(model, plain="others")
    assert sorted(everything.plain_names) == ["decoder.weight", "encoder.weight", "rnn.weight_ih_l0"]
    only = ModuliRegularizer(model, plain=["decoder.weight"], strength=0.3, space_scale=1.0, seed=0)
    none = ModuliRegularizer(model, plain=None, strength=0.3, space_scale=1.0, seed=0)
    difference = only() - none()
    assert difference.item() == pytest.approx(0.3 * model.decoder.weight.abs().mean().item(), rel=1e-4)
    with pytest.raises(ValueError, match=r"decoder\.bias"):
        ModuliRegularizer(model, plain=["decoder.bias"])


def test_none_control_switches_the_moduli_term_off() -> None:
    model = Navigator(8)
    reg = ModuliRegularizer(model, inhibitor="none", plain=None)
    assert reg().item() == 0.0


def test_scale_free_strength_gives_the_same_per_weight_gradient_at_every_width() -> None:
    # With C = 1 the per-weight gradient of lambda * mean|W_hh| is lambda / N^2 (paper); scale-free it is constant.
    grads = {}
    for n in (16, 64):
        model = nn.RNN(3, n)
        reg = ModuliRegularizer(model, inhibitor="standard", plain=None, strength=0.1, width_exponent=2.0)
        reg().backward()
        grads[n] = model.weight_hh_l0.grad.abs().max().item()
        assert model.weight_hh_l0.grad.abs().min().item() == pytest.approx(grads[n])
    assert grads[16] == pytest.approx(0.1 / 4096**2)
    assert grads[64] == pytest.approx(grads[16])
    # The plain term (one hidden-sized dimension): mean over n*12 entries times (n/4096): constant per weight too.
    plain = {}
    for n in (16, 64):
        model = Navigator(n)
        reg = ModuliRegularizer(model, inhibitor="none", strength=0.1, width_exponent=2.0)
        reg().backward()
        plain[n] = model.decoder.weight.grad.abs().max().item()
    assert plain[16] == pytest.approx(0.1 / (4096 * 12))
    assert plain[64] == pytest.approx(plain[16])


def test_auto_space_scale_is_the_density_rule() -> None:
    model = nn.RNN(2, 1024)
    reg = ModuliRegularizer(model, space="torus", space_scale="auto", seed=0, plain=None)
    assert reg.scales == [pytest.approx(0.5)]
    # The same points as sample_points at that scale: all inside a 5 x 5 torus.
    expected = coefficients("torus", 1024, "dog", seed=0, scale=0.5)
    assert torch.allclose(reg.coefficients_for("weight_hh_l0"), expected)


def test_learned_geometry_recomputes_coefficients_and_gets_gradients() -> None:
    torch.manual_seed(0)
    model = nn.LSTM(3, 9)
    reg = ModuliRegularizer(model, space="sphere", learn_geometry=True, seed=2, space_scale=1.0, plain=None)
    fixed = coefficients("sphere", 9, "dog", seed=2)
    assert torch.allclose(reg.group_coefficients(0), fixed, atol=1e-4)
    optimizer = torch.optim.SGD(reg.parameters(), lr=0.1)
    before = reg().item()
    for _ in range(3):
        optimizer.zero_grad()
        reg().backward()
        assert torch.isfinite(reg.coordinates[0].grad).all()
        optimizer.step()
    assert reg().item() < before  # the neurons moved to make the fixed weights cheaper


def test_models_without_recurrent_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="no recurrent weights"):
        ModuliRegularizer(nn.Linear(3, 3))


def test_points_are_those_the_coefficients_were_built_from():
    from compress.moduli import ModuliRegularizer, coefficients
    from compress.moduli.inhibitors import inhibit
    from compress.moduli.spaces import distances

    model = torch.nn.RNN(3, 40, num_layers=2)
    regularizer = ModuliRegularizer(model, space="klein", seed=7)
    for group in (0, 1):
        points = regularizer.points(group).double()
        rebuilt = inhibit("dog", distances("klein", points), True)
        torch.testing.assert_close(rebuilt.float(), regularizer.group_coefficients(group))
    assert not torch.equal(regularizer.points(0), regularizer.points(1))  # fresh points per layer
    assert torch.equal(regularizer.group_coefficients(0), coefficients("klein", 40, seed=7))


def test_surviving_connections_count_rows_and_columns_over_gates():
    from compress.moduli import ModuliRegularizer

    model = torch.nn.LSTM(2, 3)
    with torch.no_grad():
        model.weight_hh_l0.zero_()
        model.weight_hh_l0[0, 1] = 1.0  # gate i: unit 0 <- unit 1
        model.weight_hh_l0[3 + 2, 2] = 1.0  # gate f: unit 2 <- unit 2 (a self-connection counts twice)
    regularizer = ModuliRegularizer(model, space="torus", seed=0)
    assert regularizer.surviving_connections(0).tolist() == [1.0, 1.0, 2.0]


@pytest.mark.parametrize("learn_geometry", [False, True])
def test_coefficients_follow_the_model_device(learn_geometry):
    """A model on another device (meta here; CUDA in tests/compress/test_cuda.py) gets C and its learned coordinates on
    that device, so the penalty never mixes devices (found on a GPU: the buffers had stayed on the CPU)."""
    model = nn.RNN(3, 8, nonlinearity="relu", device="meta")
    regularizer = ModuliRegularizer(model, space="torus", seed=0, learn_geometry=learn_geometry)
    tensors = list(regularizer.buffers()) + list(regularizer.parameters())
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert regularizer().device.type == "meta"
