"""Moduli spaces: metric properties, the spaces' identifications, and hand-computed distances."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.moduli import Space, auto_scale, distances, parse_space, sample_points

ALL_SPACES = ["circle", "sphere", "s3", "torus", "torus6", "klein", "mixed"]
coordinate = st.floats(min_value=-35.0, max_value=35.0, allow_nan=False)
point2 = st.tuples(coordinate, coordinate)


def pair_distance(space: str, a, b, **kwargs) -> float:
    points = torch.tensor([a, b], dtype=torch.float64)
    return distances(space, points, **kwargs)[0, 1].item()


@pytest.mark.parametrize("space", ALL_SPACES)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 24))
def test_distances_are_a_metric(space: str, seed: int, n: int) -> None:
    points = sample_points(space, n, seed, dtype=torch.float64)
    d = distances(space, points)
    assert d.shape == (n, n)
    assert not torch.isnan(d).any()
    assert torch.equal(d, d.T)
    assert torch.all(d.diagonal() == 0)
    assert torch.all(d >= 0)
    # d(i, k) <= d(i, j) + d(j, k) for every triple.
    slack = d[:, None, :] - (d[:, :, None] + d[None, :, :])
    assert slack.max().item() <= 1e-9


@pytest.mark.parametrize("space", ALL_SPACES)
def test_sampling_is_seeded(space: str) -> None:
    assert torch.equal(sample_points(space, 50, seed=3), sample_points(space, 50, seed=3))
    assert not torch.equal(sample_points(space, 50, seed=3), sample_points(space, 50, seed=4))


def test_points_lie_in_their_space() -> None:
    for space, dim in (("circle", 2), ("sphere", 3), ("s3", 4)):
        points = sample_points(space, 500, seed=0, dtype=torch.float64)
        assert points.shape == (500, dim)
        assert torch.allclose(points.norm(dim=1), torch.ones(500, dtype=torch.float64))
        # Uniform on the sphere: the mean of many points is near the centre.
        assert points.mean(0).norm() < 0.15
    for space, side in (("torus", 10.0), ("klein", 10.0), ("torus6", 10.0)):
        points = sample_points(space, 500, seed=0)
        assert points.min() >= 0 and points.max() < side
    mixed = sample_points("mixed", 100, seed=0, dtype=torch.float64)
    assert torch.allclose(mixed[:, :3].norm(dim=1), torch.ones(100, dtype=torch.float64))
    assert mixed[:, 3:].min() >= 0 and mixed[:, 3:].max() < 10


def test_hand_computed_distances() -> None:
    # Torus [0, 10)^2: (0.5, 0.5) and (9.5, 9.5) are 1 apart in each coordinate through the wrap.
    assert pair_distance("torus", (0.5, 0.5), (9.5, 9.5)) == pytest.approx(math.sqrt(2))
    assert pair_distance("torus", (1.0, 2.0), (4.0, 6.0)) == pytest.approx(5.0)
    # Klein bottle: (9.5, 9) is glued to (-0.5, 10 - 9) = (-0.5, 1), one unit left of (0.5, 1); the torus says sqrt(5).
    assert pair_distance("klein", (0.5, 1.0), (9.5, 9.0)) == pytest.approx(1.0)
    assert pair_distance("torus", (0.5, 1.0), (9.5, 9.0)) == pytest.approx(math.sqrt(5))
    assert pair_distance("klein", (1.0, 0.5), (1.0, 9.5)) == pytest.approx(1.0)
    # 6-torus: one unit through the wrap in each of 6 coordinates.
    assert pair_distance("torus6", [0.5] * 6, [9.5] * 6) == pytest.approx(math.sqrt(6))
    # Circle: 5 * angle between the points; S^3: 10 * angle.
    a, b = 0.3, 2.9
    assert pair_distance("circle", (math.cos(a), math.sin(a)), (math.cos(b), math.sin(b))) == pytest.approx(5 * 2.6)
    assert pair_distance("s3", (1, 0, 0, 0), (0, 0, 1, 0)) == pytest.approx(10 * math.pi / 2)
    # Mixed: sqrt(d_S2^2 + d_T2^2) with d_S2 = 5 * pi/2 and d_T2 = sqrt(2).
    expected = math.sqrt((5 * math.pi / 2) ** 2 + 2)
    assert pair_distance("mixed", (1, 0, 0, 0.5, 0.5), (0, 1, 0, 9.5, 9.5)) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(a=point2, b=point2, kx=st.integers(-3, 3), ky=st.integers(-3, 3))
def test_torus_distance_invariant_under_period_shifts(a, b, kx: int, ky: int) -> None:
    shifted = (b[0] + 10 * kx, b[1] + 10 * ky)
    assert pair_distance("torus", a, shifted) == pytest.approx(pair_distance("torus", a, b), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(a=point2, b=point2, k=st.integers(-3, 3))
def test_klein_distance_invariant_under_identifications(a, b, k: int) -> None:
    base = pair_distance("klein", a, b)
    glide = (b[0] + 10, 10 - b[1])
    back = (b[0] - 10, 10 - b[1])
    vertical = (b[0], b[1] + 10 * k)
    for image in (glide, back, vertical):
        assert pair_distance("klein", a, image) == pytest.approx(base, abs=1e-9)
    # A Klein bottle is not a torus: a horizontal shift by one period is a glide, not the identity.
    assert pair_distance("klein", (1.0, 2.0), (1.0 + 10, 2.0)) == pytest.approx(pair_distance("klein", (1, 2), (1, 8)))


@pytest.mark.parametrize(("space", "radius"), [("circle", 5.0), ("sphere", 5.0), ("s3", 10.0)])
def test_antipodal_points_are_farthest_and_never_nan(space: str, radius: float) -> None:
    points = sample_points(space, 64, seed=1, dtype=torch.float64)
    # Antipodes and exact copies: the dot product rounds to just beyond -1 or 1, where arccos would give NaN.
    scaled = points * 3.0
    all_points = torch.cat([points, -scaled, scaled])
    d = distances(space, all_points)
    assert not torch.isnan(d).any()
    n = len(points)
    antipodal = d[torch.arange(n), n + torch.arange(n)]
    assert torch.allclose(antipodal, torch.full_like(antipodal, radius * math.pi))
    assert d.max().item() == pytest.approx(radius * math.pi)
    copies = d[torch.arange(n), 2 * n + torch.arange(n)]
    assert torch.all(copies < 1e-6)


@pytest.mark.parametrize("space", ["sphere", "torus", "klein", "mixed"])
def test_gradients_are_finite_at_coincident_and_antipodal_points(space: str) -> None:
    points = sample_points(space, 8, seed=2, dtype=torch.float64)
    if space == "sphere":
        points = torch.cat([points, -points])
    points = torch.cat([points, points[:2]]).requires_grad_(True)
    distances(space, points).sum().backward()
    assert torch.isfinite(points.grad).all()


def test_scale_sets_the_period() -> None:
    assert auto_scale("torus", 1024) == pytest.approx(0.5)  # 10 * sqrt(1024 / 4096) = side 5
    assert auto_scale("circle", 1024) == pytest.approx(0.25)
    assert auto_scale("torus6", 4096) == pytest.approx(1.0)
    assert pair_distance("torus", (0.5, 0.5), (4.5, 4.5), scale=0.5) == pytest.approx(math.sqrt(2))
    assert pair_distance("torus", (0.5, 0.5), (0.5 + 5, 0.5), scale=0.5) == pytest.approx(0.0, abs=1e-12)
    points = sample_points("torus", 100, seed=0, scale=0.5)
    assert points.max() < 5


def test_bad_spaces_and_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="hyperbolic"):
        parse_space("hyperbolic")
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        distances("sphere", torch.zeros(4, 2))
    assert parse_space("torus6") == Space("torus", 6)
    assert parse_space("s2") == Space("sphere")
