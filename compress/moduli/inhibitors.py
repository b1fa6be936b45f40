"""Inhibitors: the cost g(d) of a connection between two neurons at distance d (moduli regularization, Mackey et
al., 2024).

- ``dog``: difference of Gaussians 100 (e^{-d^2/5} - e^{-4 d^2}). Zero at d = 0, peak ~81.2 at d ~ 0.888, ~0 beyond 5.
  Used inverted (below), which makes near neurons cheap: ~81 at d = 0, 0 at d ~ 0.89, ~36 at 2, ~65 at 3, ~81 far away.
- ``gauss``: 100 e^{-d^2/3};  ``ripple``: 50 + 50 cos(2 d);  ``diffusion``: d^2;  ``linear``: d.

Inversion is C = g_max - g. For the bounded inhibitors (dog, gauss, ripple) g_max is the inhibitor's supremum over
d >= 0 (the paper used the max of the sampled matrix, which is the same number up to sampling): the cost of a connection
then depends on its length only, not on which other pairs happened to be sampled, so C is the same function at every
width and stays put when coordinates are learned. The unbounded ones (diffusion, linear) already grow with distance and
are normally used with ``invert=False``; inverted, they use the matrix max.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# d^2 at the DoG peak: d/dd [e^{-d^2/5} - e^{-4 d^2}] = 0  <=>  e^{(4 - 1/5) d^2} = 20.
_DOG_PEAK_D2 = math.log(20.0) / 3.8
DOG_MAX = 100.0 * (math.exp(-_DOG_PEAK_D2 / 5.0) - math.exp(-4.0 * _DOG_PEAK_D2))
DOG_ZERO_DISTANCE = math.sqrt(_DOG_PEAK_D2)


def dog(d: Tensor) -> Tensor:
    d2 = d.square()
    return 100.0 * (torch.exp(-d2 / 5.0) - torch.exp(-4.0 * d2))


def gauss(d: Tensor) -> Tensor:
    return 100.0 * torch.exp(-d.square() / 3.0)


def ripple(d: Tensor) -> Tensor:
    return 50.0 + 50.0 * torch.cos(2.0 * d)


def diffusion(d: Tensor) -> Tensor:
    return d.square()


def linear(d: Tensor) -> Tensor:
    return d.clone()


INHIBITORS: dict[str, Callable[[Tensor], Tensor]] = {
    "dog": dog,
    "gauss": gauss,
    "ripple": ripple,
    "diffusion": diffusion,
    "linear": linear,
}
# Supremum over d >= 0; None: unbounded, invert against the matrix max.
SUPREMUM: dict[str, float | None] = {"dog": DOG_MAX, "gauss": 100.0, "ripple": 100.0, "diffusion": None, "linear": None}
# Controls that ignore geometry: "standard" is plain L1 (C = 1), "none" switches the moduli term off (C = 0).
CONTROLS = ("standard", "none")


def check_inhibitor(name: str) -> str:
    if name not in INHIBITORS and name not in CONTROLS:
        raise ValueError(f"inhibitor must be one of {sorted(INHIBITORS) + list(CONTROLS)}, got {name!r}")
    return name


def inhibit(name: str, d: Tensor, invert: bool = True) -> Tensor:
    """C = g(d), or g_max - g(d) when ``invert``. The controls ignore ``invert``: "standard" is always 1, "none" 0.

    The authors inverted the constant C = 1 of their plain-L1 baseline into C = 0, a silent no-op; here a control is
    what its name says whatever the flags.
    """
    check_inhibitor(name)
    if name == "standard":
        return torch.ones_like(d)
    if name == "none":
        return torch.zeros_like(d)
    values = INHIBITORS[name](d)
    if not invert:
        return values
    top = SUPREMUM[name]
    if top is None:
        top = values.detach().max()
    return top - values
