"""The moduli regularizer: penalise each recurrent weight by the distance between the neurons it connects.

penalty = lambda * sum over recurrent W_hh of mean_ij(C_ij * |W_hh[i, j]|^p)
        + lambda_plain * sum over the other weights (W_ih, encoder, decoder, ...) of mean|W|^p    (Mackey et al. 2024)

Gate awareness: PyTorch packs the G gates of an LSTM (G = 4) or GRU (3) into the rows of W_hh, shape (G*N, N), so row
g*N + i belongs to neuron i and C is tiled G times along the rows. Predefined-sparse layers (``compress.predefined``)
keep one (G*h_c, h_c) tensor per component c, rows [gate][unit of c], columns [unit of c]: their coefficient block is C
restricted to the component's hidden slice, tiled G times; the mean is over the dense-equivalent G*N*N entries, so a
sparse layer and its dense equivalent (zeros off the blocks) get exactly the same penalty.

Scale-free strength (``width_exponent``). The paper's lambda = 0.1 was tuned at N = 4096. Because the moduli term is a
mean over N^2 entries, each weight's regularisation gradient is lambda * C_ij / (G N^2): at N = 256 it is 256 times the
paper's, which shrinks W_hh until pruning strips it (measured with benchmarks/moduli_sweep.py). With
``width_exponent=a`` the moduli term uses lambda * (N / 4096)^a and each plain term lambda * (N / 4096)^(a / 2); a = 2
gives every weight the regularisation gradient it would get in the 4096-wide model (the plain tensors have one
hidden-sized dimension, hence the half exponent). ``width_exponent=None`` is the paper's formula unchanged.

Space size (``space_scale``). Two rules, and they differ at small N:
- 1.0 (default, the paper's spaces): the *fraction* of cheap pairs stays ~4% at every N (inverted DoG < 10), so at a
  fixed sparsity the kept budget per neuron (10% of N at 90%) is ~2.2x its cheap neighbours, as in the paper.
- "auto": lengths times (N / 4096)^(1/m), m the dimension (torus side 10 * sqrt(N / 4096); ``spaces.auto_scale``):
  the *number* of cheap neighbours per neuron stays the paper's (~180), which at N = 256 is 64% of all pairs (the
  cheap annulus around d ~ 0.89 wraps the small torus), so the geometry constrains a 90%-sparse network far less.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from compress.moduli.inhibitors import check_inhibitor, inhibit
from compress.moduli.spaces import REFERENCE_WIDTH, Space, auto_scale, distances, parse_space, sample_points
from compress.predefined.layout import gate_count
from compress.predefined.recurrent import SparseRecurrent

_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_CELL_GATES = {nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}


def resolve_scale(space: str | Space, n: int, scale: float | str) -> float:
    if scale == "auto":
        return auto_scale(space, n)
    if isinstance(scale, str) or not scale > 0:
        raise ValueError(f"space scale must be a positive number or 'auto', got {scale!r}")
    return float(scale)


def permutation_index(n: int, seed: int | None) -> Tensor:
    """The shuffle of the n*n entries used by the "permuted" control (seeded)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed) + 1_000_003)  # not the stream that drew the points
    return torch.randperm(n * n, generator=generator)


def coefficients(
    space: str | Space,
    n: int,
    inhibitor: str = "dog",
    invert: bool = True,
    seed: int | None = None,
    *,
    permute: bool = False,
    scale: float | str = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The fixed (n, n) coefficient matrix C = g(d(x_i, x_j)) for n fresh points of ``space`` (seeded).

    ``inhibitor``: dog, gauss, ripple, diffusion, linear, or the controls "standard" (C = 1, plain L1) and "none"
    (C = 0). ``permute``: shuffle the n^2 entries (the "permuted" control: same cost distribution, no geometry).
    ``scale``: the space's size factor, or "auto" for (n / 4096)^(1/m) (see ``spaces``).
    """
    check_inhibitor(inhibitor)
    spec = parse_space(space)
    factor = resolve_scale(spec, n, scale)
    if inhibitor in ("standard", "none"):
        # No geometry: no points needed, and permuting a constant changes nothing.
        return inhibit(inhibitor, torch.zeros(n, n, dtype=dtype), invert)
    points = sample_points(spec, n, seed, scale=factor, dtype=torch.float64)
    matrix = inhibit(inhibitor, distances(spec, points, scale=factor), invert)
    if permute:
        matrix = matrix.flatten()[permutation_index(n, seed)].view(n, n)
    return matrix.to(dtype)


@dataclass(frozen=True)
class RecurrentWeight:
    """One recurrent weight tensor and where its rows/columns sit in a layer's hidden state."""

    name: str  # qualified parameter name in the model
    module: nn.Module
    attribute: str
    group: int  # which point set (one per layer and direction)
    gates: int
    offset: int  # first hidden unit this tensor covers
    size: int  # hidden units this tensor covers (rows per gate = columns)
    width: int  # N of the layer


def find_recurrent_weights(model: nn.Module) -> tuple[list[RecurrentWeight], list[int], dict[str, int]]:
    """All W_hh of nn.RNN/LSTM/GRU, their cells, and predefined-sparse layers.

    Returns the weights, the width N of each point group, and for the input weights of predefined-sparse layers the
    dense-equivalent entry count (so their plain term is a mean over the same entries as the dense layer's).
    """
    weights: list[RecurrentWeight] = []
    widths: list[int] = []
    dense_counts: dict[str, int] = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, SparseRecurrent):
            gates = gate_count(module.cell)
            for layer, layout in enumerate(module.layouts):
                for suffix in module._suffixes:
                    group = len(widths)
                    widths.append(layout.hidden_size)
                    for c, (offset, size) in enumerate(zip(layout.hidden_offsets, layout.hidden_sizes, strict=True)):
                        attribute = module._name("weight_hh", layer, suffix, c)
                        weights.append(
                            RecurrentWeight(
                                dot + attribute, module, attribute, group, gates, offset, size, layout.hidden_size
                            )
                        )
                        ih = dot + module._name("weight_ih", layer, suffix, c)
                        dense_counts[ih] = gates * layout.hidden_size * layout.input_size
        elif isinstance(module, nn.RNNBase):
            if getattr(module, "proj_size", 0):
                raise ValueError(f"{prefix or 'model'}: LSTM with proj_size is not supported by the moduli regularizer")
            gates = _RNN_GATES[module.mode]
            for attribute in module._flat_weights_names:
                if attribute.startswith("weight_hh"):
                    group = len(widths)
                    widths.append(module.hidden_size)
                    weights.append(
                        RecurrentWeight(
                            dot + attribute, module, attribute, group, gates, 0, module.hidden_size, module.hidden_size
                        )
                    )
        elif type(module) in _CELL_GATES:
            group = len(widths)
            widths.append(module.hidden_size)
            weights.append(
                RecurrentWeight(
                    dot + "weight_hh",
                    module,
                    "weight_hh",
                    group,
                    _CELL_GATES[type(module)],
                    0,
                    module.hidden_size,
                    module.hidden_size,
                )
            )
    return weights, widths, dense_counts


class ModuliRegularizer(nn.Module):
    """Attach to a model; calling it returns the penalty to add to the task loss.

    >>> reg = ModuliRegularizer(model, space="torus", inhibitor="dog", strength=0.1)
    >>> loss = task_loss + reg()

    Arguments:
        space, inhibitor, invert, permute: the geometry and cost (see ``coefficients``). One fresh point set per
            recurrent layer and direction, drawn with seed ``seed + group``.
        strength: lambda. With ``width_exponent`` set it is the lambda of the 4096-wide reference model.
        power: p in |W|^p.
        plain: which other tensors get the plain mean|W|^p term: "others" (every parameter with >= 2 dimensions that is
            not a regularised W_hh: W_ih, encoder, decoder, embeddings), None for none, or an iterable of parameter
            names (as in ``model.named_parameters()``).
        plain_strength: lambda of the plain term (default: ``strength``, as the paper's language model).
        width_exponent: None for the paper's formula; a (e.g. 2.0) for the scale-free strength described above.
        space_scale: a size factor (1.0 = the paper's spaces) or "auto" (neighbour count per neuron as in the paper).
        learn_geometry: make the point coordinates parameters and recompute C on every call (paper v2). Add
            ``reg.parameters()`` to the optimizer.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        space: str | Space = "torus",
        inhibitor: str = "dog",
        invert: bool = True,
        permute: bool = False,
        strength: float = 0.1,
        power: float = 1.0,
        plain: str | Iterable[str] | None = "others",
        plain_strength: float | None = None,
        width_exponent: float | None = None,
        reference_width: int = REFERENCE_WIDTH,
        space_scale: float | str = 1.0,
        learn_geometry: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        check_inhibitor(inhibitor)
        if strength < 0 or (plain_strength is not None and plain_strength < 0):
            raise ValueError(f"strength must be >= 0, got {strength} (plain_strength {plain_strength})")
        if power <= 0:
            raise ValueError(f"power must be > 0, got {power}")
        self.space = parse_space(space)
        self.inhibitor, self.invert, self.permute = inhibitor, invert, permute
        self.strength = float(strength)
        self.plain_strength = self.strength if plain_strength is None else float(plain_strength)
        self.power = float(power)
        self.width_exponent, self.reference_width = width_exponent, reference_width
        self.learn_geometry = learn_geometry and inhibitor not in ("standard", "none")

        self.recurrent, widths, dense_counts = find_recurrent_weights(model)
        if not self.recurrent:
            raise ValueError(
                "the model has no recurrent weights (nn.RNN/LSTM/GRU, their cells, or compress.predefined)"
            )
        self.widths = widths
        self.scales = [resolve_scale(self.space, n, space_scale) for n in widths]
        self.coordinates = nn.ParameterList()
        self.group_seeds: list[int | None] = []
        for group, n in enumerate(widths):
            group_seed = None if seed is None else seed + group
            self.group_seeds.append(group_seed)
            if self.learn_geometry:
                points = sample_points(self.space, n, group_seed, scale=self.scales[group])
                self.coordinates.append(nn.Parameter(points))
                if permute:
                    self.register_buffer(f"permutation_{group}", permutation_index(n, group_seed))
            else:
                matrix = coefficients(
                    self.space, n, inhibitor, invert, group_seed, permute=permute, scale=self.scales[group]
                )
                self.register_buffer(f"coefficients_{group}", matrix)

        named = dict(model.named_parameters())
        recurrent_names = {w.name for w in self.recurrent}
        if plain == "others":
            plain_names = [name for name, p in named.items() if p.dim() >= 2 and name not in recurrent_names]
        elif plain is None:
            plain_names = []
        elif isinstance(plain, str):
            raise ValueError(f"plain must be 'others', None or a list of parameter names, got {plain!r}")
        else:
            plain_names = list(plain)
            unknown = [n for n in plain_names if n not in named]
            if unknown:
                raise ValueError(f"plain names parameters the model does not have: {unknown}")
        # Parameters are looked up on the model at call time (nn.LSTM may re-create its flat weights).
        self._plain = [
            (name, *_owner(model, name), dense_counts.get(name, named[name].numel())) for name in plain_names
        ]
        # C and the learned coordinates live where the model does (a CUDA model must not read CPU coefficients).
        self.to(next(iter(named.values())).device)

    # -- coefficients ----------------------------------------------------------------------------------------------

    def group_coefficients(self, group: int) -> Tensor:
        """C (N, N) of one point group; recomputed from the coordinates when the geometry is learned."""
        if not self.learn_geometry:
            return getattr(self, f"coefficients_{group}")
        n = self.widths[group]
        d = distances(self.space, self.coordinates[group], scale=self.scales[group])
        matrix = inhibit(self.inhibitor, d, self.invert)
        if self.permute:
            matrix = matrix.flatten()[getattr(self, f"permutation_{group}")].view(n, n)
        return matrix

    def points(self, group: int) -> Tensor | None:
        """Where the neurons of one point group sit (None for unseeded fixed geometry, whose points were not kept)."""
        if self.learn_geometry:
            return self.coordinates[group].detach()
        if self.inhibitor in ("standard", "none") or self.group_seeds[group] is None:
            return None
        # coefficients() drew exactly these points from the same seed and scale.
        return sample_points(
            self.space, self.widths[group], self.group_seeds[group], scale=self.scales[group], dtype=torch.float64
        )

    def surviving_connections(self, group: int) -> Tensor:
        """Per neuron of a group: non-zero recurrent weights into or out of it, over all gates and directions."""
        degree = torch.zeros(self.widths[group])
        for weight in self.recurrent:
            if weight.group != group:
                continue
            tensor = getattr(weight.module, weight.attribute).detach().cpu()
            kept = (tensor != 0).view(weight.gates, weight.size, weight.size).sum(0).float()
            span = slice(weight.offset, weight.offset + weight.size)
            degree[span] += kept.sum(1) + kept.sum(0)
        return degree

    def coefficients_for(self, name: str) -> Tensor:
        """The coefficient tensor matched entry by entry to the recurrent weight ``name`` (gates tiled along rows)."""
        for weight in self.recurrent:
            if weight.name == name:
                block = self.group_coefficients(weight.group)
                block = block[weight.offset : weight.offset + weight.size, weight.offset : weight.offset + weight.size]
                return block.repeat(weight.gates, 1)
        raise KeyError(f"{name!r} is not a regularised recurrent weight; they are {[w.name for w in self.recurrent]}")

    @property
    def plain_names(self) -> list[str]:
        return [name for name, *_ in self._plain]

    # -- penalty ---------------------------------------------------------------------------------------------------

    def _width_factor(self, n: int, exponent_share: float) -> float:
        if self.width_exponent is None:
            return 1.0
        return (n / self.reference_width) ** (self.width_exponent * exponent_share)

    def _magnitude(self, weight: Tensor) -> Tensor:
        return weight.abs() if self.power == 1.0 else weight.abs().pow(self.power)

    def moduli_penalty(self) -> Tensor:
        total = None
        matrices: dict[int, Tensor] = {}
        for weight in self.recurrent:
            if weight.group not in matrices:
                matrices[weight.group] = self.group_coefficients(weight.group)
            tensor = getattr(weight.module, weight.attribute)
            lo, hi = weight.offset, weight.offset + weight.size
            block = matrices[weight.group][lo:hi, lo:hi].to(tensor.dtype)
            per_gate = self._magnitude(tensor).view(weight.gates, weight.size, weight.size)
            term = (per_gate * block).sum() / (weight.gates * weight.width * weight.width)
            term = term * (self.strength * self._width_factor(weight.width, 1.0))
            total = term if total is None else total + term
        return total

    def plain_penalty(self) -> Tensor | None:
        if not self._plain:
            return None
        width = max(self.widths)
        factor = self.plain_strength * self._width_factor(width, 0.5)
        total = None
        for _, module, attribute, count in self._plain:
            term = self._magnitude(getattr(module, attribute)).sum() / count
            total = term if total is None else total + term
        return total * factor

    def forward(self) -> Tensor:
        penalty = self.moduli_penalty()
        plain = self.plain_penalty()
        return penalty if plain is None else penalty + plain


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_path, _, attribute = name.rpartition(".")
    return (model.get_submodule(module_path) if module_path else model), attribute
