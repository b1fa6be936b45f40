"""Moduli spaces: where hidden neurons live, and how far apart two of them are (moduli regularization, Mackey et
al., 2024).

Every space has a *paper size* (circle and sphere: geodesic distance 5*arccos, S^3: 10*arccos, torus and Klein bottle:
side 10) chosen by the paper for N = 4096 neurons, and an optional ``scale`` that multiplies all its lengths.

Density rule (:func:`auto_scale`): the inverted difference-of-Gaussians makes a neuron's cheap partners those at
distance ~0.5-1.3 (cost 0 at d ~ 0.89), a fixed length. On the paper's 10x10 torus with 4096 neurons that is ~180 cheap
partners per neuron, ~4% of all pairs; with 256 neurons on the same torus it is 16x fewer. Keeping the density of
neurons per unit volume fixed keeps that count: multiply the lengths of a space of dimension m by (N / 4096) ** (1 / m)
(torus side 10 * sqrt(N / 4096), circle length proportional to N). The alternative, the paper's size at every N, keeps
the *fraction* of cheap pairs instead; which of the two suits a target sparsity is discussed in ``regularizer``.

Points are float tensors; ``distances`` accepts points outside the fundamental domain (a torus point shifted by the
period, a Klein-bottle point moved by an identification) and gives the same answer, and it is differentiable with finite
gradients everywhere (also at coincident and antipodal points) so coordinates can be learned.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor

# Width the paper's spaces and strengths were tuned for (navigation RNN, 4096 units).
REFERENCE_WIDTH = 4096

_SPHERE_RADIUS = {"circle": 5.0, "sphere": 5.0, "s3": 10.0}
_SPHERE_AMBIENT = {"circle": 2, "sphere": 3, "s3": 4}
_FLAT_SIDE = 10.0


@dataclass(frozen=True)
class Space:
    """A moduli space: ``kind`` in circle, sphere (S^2), s3, torus (``dim``-torus), klein, mixed (S^2 x T^2).

    ``scale`` multiplies every length of the paper's space (1.0 = the paper's size).
    """

    kind: str
    dim: int = 2
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("circle", "sphere", "s3", "torus", "klein", "mixed"):
            raise ValueError(
                f"space must be circle, sphere, s3, torus, torus<n> (e.g. torus6), klein or mixed; got {self.kind!r}"
            )
        if self.kind == "torus" and self.dim < 1:
            raise ValueError(f"a torus needs dim >= 1, got {self.dim}")
        if not (isinstance(self.scale, int | float) and self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"space scale must be a positive number, got {self.scale!r}")

    @property
    def intrinsic_dim(self) -> int:
        """Dimension of the manifold (what the neuron density is measured in)."""
        return {"circle": 1, "sphere": 2, "s3": 3, "klein": 2, "mixed": 4}.get(self.kind, self.dim)

    @property
    def coordinate_dim(self) -> int:
        """Number of coordinates per point: ambient for spheres, the box for flat spaces, 3 + 2 for mixed."""
        if self.kind in _SPHERE_AMBIENT:
            return _SPHERE_AMBIENT[self.kind]
        if self.kind == "torus":
            return self.dim
        return 5 if self.kind == "mixed" else 2

    @property
    def side(self) -> float:
        """Side of the flat part (torus, Klein bottle, the torus of mixed)."""
        return _FLAT_SIDE * self.scale

    @property
    def radius(self) -> float:
        """Geodesic-distance factor of the round part: d = radius * arccos(<a, b>)."""
        return _SPHERE_RADIUS.get(self.kind, _SPHERE_RADIUS["sphere"]) * self.scale

    def scaled(self, scale: float) -> Space:
        return Space(self.kind, self.dim, self.scale * scale)


def parse_space(space: str | Space) -> Space:
    """``"torus"`` (2-D), ``"torus6"``/``"torus_6"`` (6-D), ``"circle"``, ``"sphere"``/``"s2"``, ``"s3"``, ``"klein"``,
    ``"mixed"``, or a :class:`Space`."""
    if isinstance(space, Space):
        return space
    if not isinstance(space, str):
        raise ValueError(f"space must be a name or a Space, got {space!r}")
    name = space.strip().lower()
    match = re.fullmatch(r"torus[_-]?(\d+)(?:d)?", name)
    if match:
        return Space("torus", int(match.group(1)))
    aliases = {"s1": "circle", "s2": "sphere", "klein_bottle": "klein", "t2": "torus"}
    return Space(aliases.get(name, name))


def auto_scale(space: str | Space, n: int, reference_n: int = REFERENCE_WIDTH) -> float:
    """(n / reference_n) ** (1 / m), m the intrinsic dimension: keeps neurons per unit volume as in the paper."""
    if n < 1:
        raise ValueError(f"number of neurons must be >= 1, got {n}")
    return (n / reference_n) ** (1.0 / parse_space(space).intrinsic_dim)


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def sample_points(
    space: str | Space, n: int, seed: int | None = None, *, scale: float = 1.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``n`` points drawn uniformly (w.r.t. the space's volume) from ``space``, shape (n, coordinate_dim).

    Spheres: unit vectors in R^2, R^3, R^4 (normalised Gaussians). Torus/Klein: uniform in [0, side)^dim. Mixed: a
    unit vector in R^3 followed by a point of the 2-torus. Same seed, same points.
    """
    spec = parse_space(space).scaled(scale)
    if n < 1:
        raise ValueError(f"number of points must be >= 1, got {n}")
    generator = _generator(seed)

    def round_part(ambient: int) -> Tensor:
        gauss = torch.randn(n, ambient, generator=generator, dtype=torch.float64)
        return gauss / gauss.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def flat_part(dims: int) -> Tensor:
        return torch.rand(n, dims, generator=generator, dtype=torch.float64) * spec.side

    if spec.kind in _SPHERE_AMBIENT:
        points = round_part(_SPHERE_AMBIENT[spec.kind])
    elif spec.kind == "mixed":
        points = torch.cat([round_part(3), flat_part(2)], dim=1)
    else:
        points = flat_part(spec.coordinate_dim)
    return points.to(dtype)


def _safe_sqrt(squared: Tensor) -> Tensor:
    # Exact zeros where squared == 0 and a zero (not NaN) gradient there, so coincident points can be learned.
    positive = squared > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, torch.ones_like(squared))), 0.0)


def _safe_arccos(cosine: Tensor) -> Tensor:
    # Rounding can push <a, b> of unit vectors slightly outside [-1, 1]; arccos would give NaN there (the authors mapped
    # that NaN to 0, making antipodal neurons look like neighbours). Clamp to the exact end values, and keep the
    # gradient finite: arccos' is infinite at +-1, so those entries take the constant branch.
    inside = cosine.abs() < 1
    safe = torch.where(inside, cosine, torch.zeros_like(cosine))
    ends = torch.where(cosine >= 1, 0.0, math.pi).to(cosine.dtype)
    return torch.where(inside, torch.arccos(safe), ends)


def _round_distances(a: Tensor, b: Tensor, radius: float) -> Tensor:
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return radius * _safe_arccos(a @ b.T)


def _wrapped_difference(a: Tensor, b: Tensor, side: float) -> Tensor:
    # Per-coordinate shortest difference on a circle of circumference `side`: in [0, side / 2].
    diff = torch.remainder(a[:, None, :] - b[None, :, :], side)
    return torch.minimum(diff, side - diff)


def _torus_squared(a: Tensor, b: Tensor, side: float) -> Tensor:
    return _wrapped_difference(a, b, side).square().sum(-1)


def canonical_klein(points: Tensor, side: float) -> Tensor:
    """Representative in [0, side)^2 of Klein-bottle points.

    Undoes the identifications (x, y) ~ (x + side, side - y) and (x, y) ~ (x, y + side).
    """
    x, y = points[:, 0], points[:, 1]
    turns = torch.floor(x / side)
    x0 = x - turns * side
    odd = torch.remainder(turns, 2) == 1
    y = torch.where(odd, side - y, y)
    return torch.stack([x0, torch.remainder(y, side)], dim=1)


def _klein_squared(a: Tensor, b: Tensor, side: float) -> Tensor:
    # Minimum over the 9 images of b in the 3x3 copies of the fundamental square around it: (x + i*side, y') where
    # y' = y for i = 0 and side - y for i = +-1 (the glide reflection), then y' + j*side for j in -1, 0, 1.
    # For a and b in the square, some image is within side / sqrt(2) while any farther copy is >= side away.
    a = canonical_klein(a, side)
    b = canonical_klein(b, side)
    best = None
    for i in (-1, 0, 1):
        by = b[:, 1] if i == 0 else side - b[:, 1]
        dx = a[:, None, 0] - (b[None, :, 0] + i * side)
        for j in (-1, 0, 1):
            dy = a[:, None, 1] - (by[None, :] + j * side)
            squared = dx.square() + dy.square()
            best = squared if best is None else torch.minimum(best, squared)
    return best


def distances(space: str | Space, points: Tensor, other: Tensor | None = None, *, scale: float = 1.0) -> Tensor:
    """Pairwise geodesic distances, shape (len(points), len(other or points)).

    ``scale`` must match the one the points were sampled with (it sets the torus period / sphere radius).
    Symmetric, zero on the diagonal, non-negative, satisfies the triangle inequality (a true metric on each space).
    """
    spec = parse_space(space).scaled(scale)
    other = points if other is None else other
    for name, tensor in (("points", points), ("other", other)):
        if tensor.dim() != 2 or tensor.size(1) != spec.coordinate_dim:
            raise ValueError(
                f"{name} for space {spec.kind!r} must have shape (n, {spec.coordinate_dim}), got {tuple(tensor.shape)}"
            )
    if spec.kind in _SPHERE_AMBIENT:
        result = _round_distances(points, other, spec.radius)
    elif spec.kind == "torus":
        result = _safe_sqrt(_torus_squared(points, other, spec.side))
    elif spec.kind == "klein":
        result = _safe_sqrt(_klein_squared(points, other, spec.side))
    else:  # mixed curvature: sqrt(d_S2^2 + d_T2^2)
        round_part = _round_distances(points[:, :3], other[:, :3], spec.radius)
        result = _safe_sqrt(round_part.square() + _torus_squared(points[:, 3:], other[:, 3:], spec.side))
    if other is points:
        # Exactly symmetric (a matrix product is not, bit for bit) and exactly 0 from a point to itself.
        result = 0.5 * (result + result.T)
        result = result * (1 - torch.eye(len(points), dtype=result.dtype, device=result.device))
    return result
