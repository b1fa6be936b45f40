"""Parameter budget planner: which (components, input_density) make a sparse layer as large as a dense one.

Demeester et al., "Predefined Sparseness in Recurrent Sequence Models", CoNLL 2018, recurrent layers, at a given
parameter reduction. A dense layer (in_factor*n_in -> out_factor*n_hid) has
G*(hi*ho + ho^2 + 2*ho) parameters at its own sizes; a sparse layer (n_in -> n_hid, k, delta) about
G*(delta*hi*ho + ho^2/k + 2*ho). Equal counts give delta; delta >= 1/k gives the smallest valid k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compress.predefined.layout import LayerLayout, gate_count

_EPS = 1e-9


def dense_parameter_count(cell: str, input_size: int, hidden_size: int, bias: bool = True) -> int:
    """Trainable parameters of one direction of a dense PyTorch recurrent layer (two bias vectors, as PyTorch)."""
    biases = 2 * hidden_size if bias else 0
    return gate_count(cell) * (input_size * hidden_size + hidden_size * hidden_size + biases)


@dataclass(frozen=True)
class RecurrentPlan:
    cell: str
    input_size: int
    hidden_size: int
    components: int
    input_density: float
    dense_input_size: int
    dense_hidden_size: int
    sparse_parameters: int
    dense_parameters: int

    @property
    def clipped(self) -> bool:
        """True when the budget would allow a density above 1: the sparse layer is then smaller than the dense one."""
        return self.input_density == 1.0 and self.sparse_parameters < self.dense_parameters


def plan_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    in_factor: float,
    out_factor: float,
    *,
    bias: bool = True,
) -> RecurrentPlan:
    """Smallest k and its delta giving a sparse ``input_size -> hidden_size`` layer the parameter count of the
    dense ``in_factor*input_size -> out_factor*hidden_size`` layer.

    Raises ``ValueError`` when no k works (the dense budget is too small for the sparse sizes).
    """
    gates = gate_count(cell)
    if input_size < 1 or hidden_size < 1:
        raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size} and {hidden_size}")
    if not (0 < in_factor <= 1 and 0 < out_factor <= 1):
        raise ValueError(
            f"in_factor and out_factor must be in (0, 1] (the dense layer is the smaller one), "
            f"got {in_factor} and {out_factor}"
        )
    hi, ho, ai, ao = input_size, hidden_size, in_factor, out_factor
    bias_terms = (2 * ao, 2) if bias else (0.0, 0)
    budget = ai * ao * hi + ao * ao * ho + bias_terms[0]  # dense parameters / (G * ho)
    room = budget - bias_terms[1]  # what is left for weights once the sparse biases are paid
    if room <= 0:
        raise ValueError("the dense budget does not even cover the sparse layer's biases")
    k = max(1, math.ceil((hi + ho) / room - _EPS))
    if k > ho:
        raise ValueError(
            f"the dense budget needs k={k} components, more than hidden_size={ho}: raise out_factor or in_factor"
        )
    delta = min(1.0, (room - ho / k) / hi)
    dense_in, dense_hidden = round(ai * hi), round(ao * ho)
    layout = LayerLayout.build(hi, ho, k, delta)
    return RecurrentPlan(
        cell=cell,
        input_size=hi,
        hidden_size=ho,
        components=k,
        input_density=delta,
        dense_input_size=dense_in,
        dense_hidden_size=dense_hidden,
        sparse_parameters=layout.parameter_count(gates, bias),
        dense_parameters=dense_parameter_count(cell, dense_in, dense_hidden, bias),
    )
