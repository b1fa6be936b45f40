"""Where each component of a predefined-sparse recurrent layer sits (Demeester et al., "Predefined Sparseness in
Recurrent Sequence Models", CoNLL 2018: recurrent layers).

A layer with hidden size H and k components is k small dense recurrent layers side by side: component c owns a
contiguous slice of the hidden state and reads a contiguous window of the input. Windows all have the same length
L = delta * n_in; consecutive windows overlap so that the first starts at 0, the last ends exactly at n_in, and every
input index is read by at least one component.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Number of gate blocks PyTorch packs into one weight matrix, per cell type.
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}

# Slack for densities such as 1350/1725 that should land on an integer window length but arrive as 1349.9999...
_EPS = 1e-9


def gate_count(cell: str) -> int:
    try:
        return GATES[cell]
    except KeyError:
        raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}") from None


def split_hidden(hidden_size: int, components: int) -> list[int]:
    """Sizes of the k hidden segments: as equal as possible, the first ones one larger when k does not divide H."""
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    if hidden_size < components:
        raise ValueError(
            f"components ({components}) cannot exceed hidden_size ({hidden_size}): every component needs at least "
            "one hidden unit"
        )
    base, extra = divmod(hidden_size, components)
    return [base + 1 if c < extra else base for c in range(components)]


def window_length(input_size: int, components: int, input_density: float) -> int:
    """L = floor(delta * n_in), never shorter than ceil(n_in / k) so that the windows leave no gap."""
    check_density(input_density, components)
    length = math.floor(input_density * input_size + _EPS)
    return min(input_size, max(length, math.ceil(input_size / components)))


def input_windows(input_size: int, components: int, input_density: float) -> list[tuple[int, int]]:
    """(start, length) of each component's input window: equal lengths, evenly spaced, first at 0, last at n_in."""
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    length = window_length(input_size, components, input_density)
    if components == 1:
        return [(0, length)]
    span = input_size - length  # distance between the first and the last start
    # Integer rounding of c * span / (k - 1): consecutive starts differ by at most ceil(span / (k-1)) <= L.
    starts = [(c * span * 2 + (components - 1)) // (2 * (components - 1)) for c in range(components)]
    return [(s, length) for s in starts]


def check_density(input_density: float, components: int) -> None:
    if not isinstance(input_density, int | float) or isinstance(input_density, bool):
        raise ValueError(f"input_density must be a number, got {input_density!r}")
    if not 0 < input_density <= 1:
        raise ValueError(f"input_density must be in (0, 1], got {input_density}")
    if input_density * components < 1 - _EPS:
        raise ValueError(
            f"input_density ({input_density}) must be at least 1/components (1/{components} = {1 / components:.4g}): "
            "with less, some input features would be read by no component"
        )


@dataclass(frozen=True)
class LayerLayout:
    """The component structure of one layer (shared by both directions)."""

    input_size: int
    hidden_size: int
    hidden_sizes: tuple[int, ...]
    windows: tuple[tuple[int, int], ...]

    @classmethod
    def build(cls, input_size: int, hidden_size: int, components: int, input_density: float) -> LayerLayout:
        sizes = split_hidden(hidden_size, components)
        return cls(input_size, hidden_size, tuple(sizes), tuple(input_windows(input_size, components, input_density)))

    @property
    def components(self) -> int:
        return len(self.hidden_sizes)

    @property
    def hidden_offsets(self) -> list[int]:
        offsets, start = [], 0
        for size in self.hidden_sizes:
            offsets.append(start)
            start += size
        return offsets

    def parameter_count(self, gates: int, bias: bool = True) -> int:
        """Trainable parameters of one direction: sum over components of G*(L*h + h*h + 2h)."""
        total = 0
        for h, (_, length) in zip(self.hidden_sizes, self.windows, strict=True):
            total += gates * (length * h + h * h + (2 * h if bias else 0))
        return total
