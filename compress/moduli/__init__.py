"""Moduli regularization (Mackey et al., 2024): neurons on a manifold, weights cost by distance.

>>> from compress.moduli import ModuliRegularizer, coefficients, distances, sample_points
>>> points = sample_points("klein", 256, seed=0)
>>> d = distances("klein", points)                       # (256, 256)
>>> C = coefficients("torus", 256, "dog", invert=True, seed=0)
>>> reg = ModuliRegularizer(model, space="torus", strength=0.1, width_exponent=2.0)
>>> loss = task_loss + reg()
"""

from compress.moduli.inhibitors import CONTROLS, DOG_MAX, INHIBITORS, inhibit
from compress.moduli.regularizer import ModuliRegularizer, coefficients, find_recurrent_weights
from compress.moduli.spaces import REFERENCE_WIDTH, Space, auto_scale, distances, parse_space, sample_points

__all__ = [
    "CONTROLS",
    "DOG_MAX",
    "INHIBITORS",
    "REFERENCE_WIDTH",
    "ModuliRegularizer",
    "Space",
    "auto_scale",
    "coefficients",
    "distances",
    "find_recurrent_weights",
    "inhibit",
    "parse_space",
    "sample_points",
]
