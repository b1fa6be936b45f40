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
    if dense_bytes is not None:
        report["dense_checkpoint_bytes"] = dense_bytes
        if checkpoint_bytes:
            report["size_ratio"] = checkpoint_bytes / dense_bytes
    return report


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
    axes[0].plot(steps, [h["train_loss"] for h in history], marker=".", label="this job")
    axes[1].plot(steps, [h[metric] for h in history], marker=".", color="tab:orange", label="this job")
    for index, (name, run) in enumerate((compared or {}).items()):
        other = run.get("history") or []
        color = f"C{index + 2}"
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
    plt = _pyplot()
    directory = Path(directory)
    written = []
    if history:
        written.append(_save(curves_figure(history, metric, compared=compared, title=title), directory / "curves.png"))
    matrices = recurrent_matrices(model)
    if matrices:
        figure, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices), 3.4), squeeze=False)
        for axis, (name, weight) in zip(axes[0], matrices.items(), strict=True):
            kept = float((weight != 0).float().mean())
            axis.imshow(weight.abs().float().cpu().numpy(), cmap="magma", aspect="auto", interpolation="nearest")
            axis.set_title(f"|{name}| ({kept:.1%} kept)", fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
        figure.tight_layout()
        path = directory / "recurrent_weights.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def save_tradeoff_plot(
    report: dict[str, Any],
    directory: str | Path,
    metric: str,
    trained: dict[str, dict[str, Any]] | None = None,
    reference_kind: str | None = None,
    *,
    title: str | None = None,
) -> list[Path]:
    """``tradeoff.png``: this job against its reference and baselines, quality against checkpoint size (and against
    the measured speed-up when the report has one)."""
    plt = _pyplot()
    verdict = report.get("verdict") or {}
    points = [("this job", report["checkpoint_bytes"], verdict.get("value", report["metrics"][metric]))]
    element = 4
    for name, run in (trained or {}).items():
        label = f"reference ({name})" if name == reference_kind else name
        points.append((label, run["parameters"] * element, run[metric]))
    if reference_kind == "initial_weights" and verdict.get("reference") is not None:
        points.append(("reference (your weights)", report["dense_checkpoint_bytes"], verdict["reference"]))
    speed = report.get("speed") or {}
    panels = 2 if speed.get("speedup_latency") else 1
    figure, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.2), squeeze=False)
    axis = axes[0][0]
    for index, (label, size, value) in enumerate(points):
        axis.scatter([size / 1e6], [value], s=60, color=f"C{index}", label=f"{label}: {value:.4g}", zorder=3)
    if len(points) > 1:  # from the reference to this job: what the compression cost and saved
        (_, size, value), (_, ref_size, ref_value) = points[0], points[1]
        axis.annotate(
            "",
            xy=(size / 1e6, value),
            xytext=(ref_size / 1e6, ref_value),
            arrowprops={"arrowstyle": "->", "color": "gray"},
        )
        axis.set_title(f"quality against size: {size / ref_size:.2f}x the size, {value / ref_value:.3g}x the {metric}")
    axis.set(xlabel="checkpoint size (MB, log scale)", ylabel=metric)
    if len(points) == 1:
        axis.set_title("quality against size")
    axis.set_xscale("log")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    if panels == 2:
        speed_axis = axes[0][1]
        speed_axis.scatter([speed["speedup_latency"]], [points[0][2]], s=60, color="C0", label="this job (batch 1)")
        speed_axis.scatter([1.0], [verdict.get("reference") or points[0][2]], s=60, color="C1", label="dense")
        speed_axis.set(xlabel="speed-up over the dense model", ylabel=metric, title="quality against speed")
        speed_axis.grid(alpha=0.3)
        speed_axis.legend(fontsize=8)
    if title:
        figure.suptitle(textwrap.fill(title, 110), fontsize=8)
    figure.tight_layout()
    path = Path(directory) / "tradeoff.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]


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


def save_moduli_plot(regularizer, directory: str | Path) -> list[Path]:
    """The neurons of each recurrent layer on their space, coloured by their surviving recurrent connections."""
    plt = _pyplot()
    points = {g: regularizer.points(g) for g in range(len(regularizer.widths))}
    points = {g: p for g, p in points.items() if p is not None}
    if not points:
        return []
    figure, axes = plt.subplots(1, len(points), figsize=(4 * len(points), 3.6), squeeze=False)
    for axis, (group, where) in zip(axes[0], points.items(), strict=True):
        x, y, x_name, y_name = _plane(where.float().cpu(), regularizer.space.kind)
        degree = regularizer.surviving_connections(group)
        scatter = axis.scatter(x.numpy(), y.numpy(), c=degree.numpy(), s=6, cmap="viridis")
        axis.set_title(f"layer {group}: {regularizer.space.kind}, neurons by surviving connections", fontsize=8)
        axis.set_xlabel(x_name)
        axis.set_ylabel(y_name)
        figure.colorbar(scatter, ax=axis)
    figure.tight_layout()
    path = Path(directory) / "moduli_neurons.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]
