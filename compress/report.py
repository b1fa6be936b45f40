"""What a compressed model is made of: per-tensor sparsity, parameters, bytes, FLOPs, and plots.

FLOPs are estimated per token (per time step and sequence) for a forward pass: two per stored non-zero weight of every
matrix that is applied to each token (recurrent and input weights, and the decoder; an embedding is a lookup and costs
none). A sparse kernel could reach this; dense kernels on a masked model do not, which is why predefined sparsity
stores its small dense blocks instead.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.predefined import SparseEmbedding, SparseRecurrent


def tensor_table(model: nn.Module, targets: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per parameter: shape, entries, non-zeros, achieved sparsity, and the target where one was set."""
    rows = []
    for name, parameter in model.named_parameters():
        weight = parameter.detach()
        nnz = int((weight != 0).sum())
        row = {
            "name": name,
            "shape": list(weight.shape),
            "numel": weight.numel(),
            "nnz": nnz,
            "sparsity": 1 - nnz / weight.numel() if weight.numel() else 0.0,
        }
        if targets and name in targets:
            row["target_sparsity"] = targets[name]
        rows.append(row)
    return rows


def flops_per_token(model: nn.Module, kept_fraction: float | None = None) -> int:
    """Two FLOPs per stored non-zero of every matrix applied to each token; with ``kept_fraction``, that share of
    the entries instead of counting non-zeros (for estimates on a ``meta``-device model)."""

    def kept(parameter: torch.Tensor) -> int:
        if kept_fraction is not None:
            return round(parameter.numel() * kept_fraction)
        return int((parameter.detach() != 0).sum())

    embeddings = {id(m) for m in model.modules() if isinstance(m, nn.Embedding | SparseEmbedding)}
    applied = [
        p for m in model.modules() if id(m) not in embeddings for p in m.parameters(recurse=False) if p.dim() >= 2
    ]
    if getattr(model, "tied", False):  # the tied output layer multiplies by the whole embedding
        applied += list(model.embedding.parameters())
    return 2 * sum(kept(p) for p in applied)


def build_report(
    model: nn.Module,
    *,
    checkpoint_bytes: int | None = None,
    tensor_bytes: int | None = None,
    dense_bytes: int | None = None,
    targets: dict[str, float] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything about the compressed model. One definition of sparsity: ``parameters.sparsity`` is 1 - non-zero
    parameters / parameters of the equivalent dense model (pruned zeros and predefined structure both count; biases
    included); ``pruning.sparsity`` is the same over the pruned tensors alone, the figure ``target_sparsity`` asks
    for."""
    table = tensor_table(model, targets)
    entries = sum(r["numel"] for r in table)
    nonzero = sum(r["nnz"] for r in table)
    modules = predefined_modules(model)
    structured = {name: m for m in modules for name in m["parameters"]}
    for row in table:
        if row["name"] in structured:  # its zeros are structural: the stored blocks are dense
            row["structural_density"] = structured[row["name"]]["density"]
    dense = dense_entries(model)
    report = {
        "tensors": table,
        "parameters": {
            "stored": entries,
            "nonzero": nonzero,
            "dense_equivalent": dense,
            "sparsity": 1 - nonzero / dense if dense else 0.0,
        },
        "predefined_sparse_modules": [m["name"] for m in modules],
        "predefined": [{k: v for k, v in m.items() if k != "parameters"} for m in modules],
        "flops_per_token": flops_per_token(model),
        "history": history or [],
    }
    if targets:
        pruned = [r for r in table if r["name"] in targets]
        numel = sum(r["numel"] for r in pruned)
        report["pruning"] = {
            "tensors": [r["name"] for r in pruned],
            "target_sparsity": max(targets.values()),
            "sparsity": 1 - sum(r["nnz"] for r in pruned) / numel if numel else 0.0,
        }
    element = next(model.parameters()).element_size()
    untouched = [r for r in table if r["name"] not in (targets or {}) and r["name"] not in structured]
    left = [
        {"name": r["name"], "numel": r["numel"], "bytes": r["numel"] * element} for r in untouched if r["shape"][1:]
    ]
    vectors = sum(r["numel"] for r in untouched if not r["shape"][1:])
    if vectors:
        left.append({"name": "(biases and other vectors)", "numel": vectors, "bytes": vectors * element})
    if checkpoint_bytes:
        for row in left:
            row["share_of_checkpoint"] = row["bytes"] / checkpoint_bytes
    report["left_dense"] = left
    if checkpoint_bytes is not None:
        report["checkpoint_bytes"] = checkpoint_bytes
    if tensor_bytes is not None:
        report["tensor_bytes"] = tensor_bytes
    if dense_bytes is not None:
        report["dense_checkpoint_bytes"] = dense_bytes
    set_size_ratio(report)
    return report


def set_size_ratio(report: dict[str, Any]) -> None:
    """``size_ratio``: the stored tensors against the dense model's (4 bytes a parameter), like with like: the file's
    header (manifest, vocabulary) is in neither, so a tiny model is not shown larger than dense for its vocabulary."""
    stored = report.get("tensor_bytes", report.get("checkpoint_bytes"))
    if stored and report.get("dense_checkpoint_bytes"):
        report["size_ratio"] = stored / report["dense_checkpoint_bytes"]


def predefined_modules(model: nn.Module) -> list[dict[str, Any]]:
    """Each predefined-sparse module: its stored entries against its dense equivalent (its structural density)."""
    found = []
    for prefix, module in model.named_modules():
        if isinstance(module, SparseRecurrent | SparseEmbedding):
            names = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()]
            stored = sum(p.numel() for p in module.parameters())
            dense = module.dense_parameter_count()
            kind = "recurrent" if isinstance(module, SparseRecurrent) else "embedding"
            found.append(
                {"name": prefix, "kind": kind, "stored": stored, "dense_equivalent": dense, "parameters": names}
                | {"density": stored / dense if dense else 1.0}
            )
    return found


def dense_entries(model: nn.Module) -> int:
    """Entries of the equivalent dense model: predefined-sparse modules at their full dense size (from their
    layouts, so this also works on a ``meta``-device model), everything else as stored."""
    predefined = [m for m in model.modules() if isinstance(m, SparseRecurrent | SparseEmbedding)]
    counted = {id(p) for m in predefined for p in m.parameters()}
    rest = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return rest + sum(m.dense_parameter_count() for m in predefined)


def dense_bytes_of(model: nn.Module) -> int:
    """Bytes of the equivalent dense checkpoint (the model's parameters share one dtype)."""
    return dense_entries(model) * next(model.parameters()).element_size()


def recurrent_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every W_hh as PyTorch holds it (predefined-sparse layers via their dense equivalent)."""
    found = {}
    for prefix, module in model.named_modules():
        if isinstance(module, SparseRecurrent):
            for name, (weight, _) in module.dense_equivalent().items():
                if name.startswith("weight_hh"):
                    found[f"{prefix}.{name}" if prefix else name] = weight
        elif isinstance(module, nn.RNNBase):
            for name, parameter in module.named_parameters():
                if name.startswith("weight_hh"):
                    found[f"{prefix}.{name}" if prefix else name] = parameter.detach()
    return found


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    return plt


# What each reference or baseline is, in the words the pictures use.
REFERENCE_LABELS = {
    "dense_same_params": "dense, same parameters",
    "dense_full": "dense, full size",
    "initial_weights": "your weights",
}


# One colour per run in every picture: this job blue, each kind of reference or baseline its own.
RUN_COLOURS = {"this job": "C0", "dense, same parameters": "C2", "dense, full size": "C3", "your weights": "C4"}


def run_colour(label: str, index: int = 0) -> str:
    """The colour of a run's label ("this job", "reference: dense, full size", ...) in every picture; a run of
    another kind gets the ``index``-th colour after those."""
    return RUN_COLOURS.get(label.split(": ", 1)[-1], f"C{5 + index}")


def run_label(name: str, reference_kind: str | None) -> str:
    """A trained reference's or baseline's legend label, e.g. "reference: dense, same parameters"."""
    what = REFERENCE_LABELS.get(name, name)
    return f"reference: {what}" if name == reference_kind else f"baseline: {what}"


def curves_figure(
    history: list[dict[str, Any]],
    metric: str,
    *,
    compared: dict[str, dict[str, Any]] | None = None,
    title: str | None = None,
):
    """The figure of ``curves.png``: training loss and the metric against the step, each run of ``compared`` (label
    -> its metrics, and its ``history`` when it was trained) beside this job: a trained run dashed at every
    evaluation, a run without history (the user's own weights, evaluated before training) as a dashed horizontal
    line at its metric."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = [h["step"] for h in history]
    mine = run_colour("this job")
    axes[0].plot(steps, [h["train_loss"] for h in history], marker=".", color=mine, label="this job")
    axes[1].plot(steps, [h[metric] for h in history], marker=".", color=mine, label="this job")
    for index, (name, run) in enumerate((compared or {}).items()):
        other = run.get("history") or []
        color = run_colour(name, index)
        if other:
            style = {"linestyle": "--", "marker": ".", "color": color, "label": name}
            axes[0].plot([h["step"] for h in other], [h["train_loss"] for h in other], **style)
            axes[1].plot([h["step"] for h in other], [h[metric] for h in other], **style)
        elif metric in run:
            value = run[metric]
            axes[1].axhline(value, linestyle="--", color=color, label=f"{name}: {value:.4g}")
    axes[0].set(xlabel="training step", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="training step", ylabel=metric, title=f"{metric} at each evaluation")
    values = [h[metric] for h in history if h[metric] > 0]
    if values and max(values) > 5 * min(values):  # an untrained first evaluation would flatten the rest
        axes[1].set_yscale("log")
    sparsity = [h.get("pruned_sparsity") for h in history]
    if any(v is not None for v in sparsity):
        twin = axes[1].twinx()
        twin.step(steps, [v or 0.0 for v in sparsity], where="post", color="tab:purple", alpha=0.6)
        twin.set_ylabel("sparsity of the pruned tensors", color="tab:purple")
        twin.set_ylim(0, 1)
    for axis in axes:
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)
    return path


def save_plots(
    model: nn.Module,
    history: list[dict[str, Any]],
    directory: str | Path,
    metric: str,
    *,
    compared: dict[str, dict[str, Any]] | None = None,
    title: str | None = None,
) -> list[Path]:
    """``curves.png`` (training loss and the metric at every evaluation against the step, the reference and
    baselines beside them, the pruned sparsity on a second axis) and the |W_hh| pattern of each recurrent layer."""
    directory = Path(directory)
    written = []
    if history:
        written.append(_save(curves_figure(history, metric, compared=compared, title=title), directory / "curves.png"))
    matrices = recurrent_matrices(model)
    if matrices:
        written.append(_save(recurrent_weights_figure(matrices), directory / "recurrent_weights.png"))
    return written


# PyTorch's order of the gates stacked in a W_hh, by how many are stacked.
GATES = {4: ("input", "forget", "cell", "output"), 3: ("reset", "update", "new")}


def recurrent_weights_figure(matrices: dict[str, torch.Tensor]):
    """The figure of ``recurrent_weights.png``: |W_hh| of each layer, one panel each, a square pixel per weight (the
    figure's shape follows the matrices', within bounds), the gates PyTorch stacks in it marked on the row axis."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    height = 4.0  # inches of the tallest matrix
    widths = [min(6.0, max(2.4, height * w.shape[1] / w.shape[0])) + 1.6 for w in matrices.values()]  # + colour bar
    figure, axes = plt.subplots(
        1, len(matrices), figsize=(sum(widths), height + 1.4), squeeze=False, gridspec_kw={"width_ratios": widths}
    )
    for axis, (name, weight) in zip(axes[0], matrices.items(), strict=True):
        rows, columns = weight.shape
        kept = float((weight != 0).float().mean())
        image = axis.imshow(weight.abs().float().cpu().numpy(), cmap="magma", interpolation="nearest")
        axis.set_title(f"{name}\n{rows}×{columns}, {kept:.1%} of weights non-zero", fontsize=9)
        axis.set_xlabel("hidden unit (input to the recurrence)")
        gates = GATES.get(rows // columns) if rows % columns == 0 else None
        if gates:
            axis.set_yticks([columns * (k + 0.5) - 0.5 for k in range(len(gates))], gates)
            for k in range(1, len(gates)):
                axis.axhline(columns * k - 0.5, color="tab:cyan", linewidth=0.8, alpha=0.7)
            axis.set_ylabel(f"gate row ({columns} rows a gate)")
        else:
            axis.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            axis.set_ylabel("hidden unit (output)")
        axis.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        figure.colorbar(image, ax=axis, label="|weight| (black = zero)", fraction=0.12, pad=0.04)
    figure.suptitle("Recurrent weights |W_hh| of each layer", fontsize=11)
    figure.tight_layout()
    return figure


def _byte_unit(largest: float) -> tuple[float, str]:
    """The decimal unit checkpoint sizes read best in: (bytes per unit, its name)."""
    for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if largest >= scale:
            return scale, name
    return 1.0, "bytes"


def _quality_limits(axis, values: list[float]) -> None:
    """A metric axis over at least 10% of the values' size, so a 1% difference is not drawn as a cliff."""
    low, high = min(values), max(values)
    span = max(high - low, 0.1 * max(abs(low), abs(high)))
    middle = (low + high) / 2
    axis.set_ylim(middle - 0.6 * span, middle + 0.6 * span)


def tradeoff_figure(
    report: dict[str, Any],
    metric: str,
    trained: dict[str, dict[str, Any]] | None = None,
    reference_kind: str | None = None,
    *,
    compare_speed: bool = True,
    title: str | None = None,
):
    """The figure of ``tradeoff.png``, or None when there is nothing to compare this job with.

    Quality against size: this job (its tensors as stored), its reference and baselines (4 bytes a parameter), each a
    point from one model, an arrow from the reference to this job. Quality against speed (``compare_speed``, when the
    report has a measured speed): this job at its batch-1 and batch-32 speed-ups over its dense equivalent (the same
    weights stored dense, so the same quality: a vertical line at speed 1.0), the reference's quality as a
    horizontal line."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    verdict = report.get("verdict") or {}
    value = verdict.get("value", report["metrics"][metric])
    points = [("this job", report.get("tensor_bytes", report["checkpoint_bytes"]), value)]
    element = 4
    for name, run in (trained or {}).items():
        points.append((run_label(name, reference_kind), run["parameters"] * element, run[metric]))
    if reference_kind == "initial_weights" and verdict.get("reference") is not None:
        points.append(
            (run_label(reference_kind, reference_kind), report["dense_checkpoint_bytes"], verdict["reference"])
        )
    reference = next((p for p in points if p[0].startswith("reference:")), None)
    speed = (report.get("speed") or {}) if compare_speed else {}
    speedups = [(f"this job, batch {b}", speed.get(k)) for b, k in ((1, "speedup_latency"), (32, "speedup_throughput"))]
    speedups = [(label, s) for label, s in speedups if s]
    if len(points) == 1 and not speedups:
        return None
    plt = _pyplot()
    panels = 2 if speedups else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.4), squeeze=False, sharey=True)
    axis = axes[0][0]
    colours = {label: run_colour(label, index) for index, (label, _, _) in enumerate(points)}
    for label, size, quality in points:
        axis.scatter([size], [quality], s=60, color=colours[label], label=f"{label}: {quality:.4g}", zorder=3)
    if reference is not None:  # from the reference to this job: what the compression cost and saved
        _, ref_size, ref_value = reference
        axis.annotate(
            "", xy=(points[0][1], value), xytext=(ref_size, ref_value), arrowprops={"arrowstyle": "->", "color": "gray"}
        )
        axis.set_title(
            f"quality against size: {points[0][1] / ref_size:.2f}× the size, {value / ref_value:.3g}× the {metric}"
            " of the reference",
            fontsize=10,
        )
    else:
        axis.set_title("quality against size", fontsize=10)
    scale, unit = _byte_unit(max(size for _, size, _ in points))
    axis.set_xlim(0, 1.15 * max(size for _, size, _ in points))  # from zero: a third of the size looks a third
    axis.xaxis.set_major_locator(MaxNLocator(nbins=6))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / scale:.4g}"))
    axis.set(xlabel=f"size of the tensors ({unit}): this job's as stored, others at 4 bytes a parameter", ylabel=metric)
    _quality_limits(axis, [q for _, _, q in points])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    if speedups:
        speed_axis = axes[0][1]
        for (label, speedup), marker in zip(speedups, ("o", "s"), strict=False):
            colour = run_colour("this job")
            speed_axis.scatter([speedup], [value], s=60, color=colour, marker=marker, label=f"{label}: {speedup:.2f}×")
        speed_axis.axvline(1.0, linestyle="--", color="gray", label="dense equivalent (speed 1.0)")
        if reference is not None:
            speed_axis.axhline(
                reference[2], linestyle=":", color=colours[reference[0]], label=f"{reference[0]} (its {metric})"
            )
        speed_axis.set_xlim(0, max(1.2, 1.1 * max(s for _, s in speedups)))
        speed_axis.xaxis.set_major_locator(MaxNLocator(nbins=6))
        speed_axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}×"))
        speed_axis.set(xlabel="speed-up over the dense equivalent (same weights stored dense)")
        speed_axis.set_title("quality against speed", fontsize=10)
        speed_axis.tick_params(labelleft=True)
        speed_axis.grid(alpha=0.3)
        speed_axis.legend(fontsize=8)
    if title:
        figure.suptitle(textwrap.fill(title, 110), fontsize=9)
    figure.tight_layout()
    return figure


def save_tradeoff_plot(
    report: dict[str, Any],
    directory: str | Path,
    metric: str,
    trained: dict[str, dict[str, Any]] | None = None,
    reference_kind: str | None = None,
    *,
    compare_speed: bool = True,
    title: str | None = None,
) -> list[Path]:
    """``tradeoff.png`` (see :func:`tradeoff_figure`); nothing when there is nothing to compare."""
    figure = tradeoff_figure(report, metric, trained, reference_kind, compare_speed=compare_speed, title=title)
    return [] if figure is None else [_save(figure, Path(directory) / "tradeoff.png")]


def _plane(points: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor, str, str]:
    """Two plotting coordinates for a space's points, and their axis names."""
    if kind == "circle":
        angle = torch.atan2(points[:, 1], points[:, 0])
        return angle.cos(), angle.sin(), "cos angle", "sin angle"
    if kind in ("sphere", "mixed"):
        xyz = points[:, :3]
        return torch.atan2(xyz[:, 1], xyz[:, 0]), torch.asin(xyz[:, 2].clamp(-1, 1)), "longitude", "latitude"
    if kind == "s3":
        return points[:, 0], points[:, 1], "x1", "x2 (projection)"
    return points[:, 0], points[:, 1], "x", "y"


def moduli_figure(regularizer):
    """The figure of ``moduli_neurons.png``, or None when no layer has points on a space."""
    plt = _pyplot()
    points = {g: regularizer.points(g) for g in range(len(regularizer.widths))}
    points = {g: p for g, p in points.items() if p is not None}
    if not points:
        return None
    figure, axes = plt.subplots(1, len(points), figsize=(4.6 * len(points), 4.2), squeeze=False)
    for axis, (group, where) in zip(axes[0], points.items(), strict=True):
        x, y, x_name, y_name = _plane(where.float().cpu(), regularizer.space.kind)
        degree = regularizer.surviving_connections(group)
        scatter = axis.scatter(x.numpy(), y.numpy(), c=degree.numpy(), s=14, cmap="viridis")
        axis.set_title(f"layer {group}: {len(degree)} neurons on a {regularizer.space.kind}", fontsize=9)
        axis.set_xlabel(x_name)
        axis.set_ylabel(y_name)
        figure.colorbar(scatter, ax=axis, label="surviving recurrent connections (in + out)")
    figure.suptitle("Hidden neurons on the moduli space", fontsize=10)
    figure.tight_layout()
    return figure


def save_moduli_plot(regularizer, directory: str | Path) -> list[Path]:
    """``moduli_neurons.png``: the neurons of each recurrent layer on their space, coloured by their surviving
    recurrent connections."""
    figure = moduli_figure(regularizer)
    return [] if figure is None else [_save(figure, Path(directory) / "moduli_neurons.png")]
