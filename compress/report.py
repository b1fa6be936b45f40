"""What a compressed model is made of: per-tensor sparsity, parameters, bytes, FLOPs, and plots.

FLOPs are estimated per token (per time step and sequence) for a forward pass: two per stored non-zero weight of every
matrix that is applied to each token (recurrent and input weights, and the decoder; an embedding is a lookup and costs
none). A sparse kernel could reach this; dense kernels on a masked model do not, which is why predefined sparsity
stores its small dense blocks instead.
"""

from __future__ import annotations

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
    table = tensor_table(model, targets)
    entries = sum(r["numel"] for r in table)
    nonzero = sum(r["nnz"] for r in table)
    predefined = [name for name, m in model.named_modules() if isinstance(m, SparseRecurrent | SparseEmbedding)]
    dense = dense_entries(model)
    report = {
        "tensors": table,
        # Sparsity against the dense model with the same sizes: pruned zeros and predefined structure both count.
        "parameters": {
            "stored": entries,
            "nonzero": nonzero,
            "dense_equivalent": dense,
            "sparsity": 1 - nonzero / dense if dense else 0.0,
        },
        "predefined_sparse_modules": predefined,
        "flops_per_token": flops_per_token(model),
        "history": history or [],
    }
    if checkpoint_bytes is not None:
        report["checkpoint_bytes"] = checkpoint_bytes
    if dense_bytes is not None:
        report["dense_checkpoint_bytes"] = dense_bytes
        if checkpoint_bytes:
            report["size_ratio"] = checkpoint_bytes / dense_bytes
    return report


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


def save_plots(model: nn.Module, history: list[dict[str, Any]], directory: str | Path, metric: str) -> list[Path]:
    """Training curves and the |W_hh| pattern of each recurrent layer, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    directory = Path(directory)
    written = []
    if history:
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
        axes[0].set_xlabel("epoch")
        axes[0].legend()
        axes[1].plot(epochs, [h[metric] for h in history], marker="o", color="tab:orange", label=metric)
        axes[1].set_xlabel("epoch")
        axes[1].legend()
        figure.tight_layout()
        path = directory / "curves.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    matrices = recurrent_matrices(model)
    if matrices:
        figure, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices), 3.2), squeeze=False)
        for axis, (name, weight) in zip(axes[0], matrices.items(), strict=True):
            axis.imshow(weight.abs().float().cpu().numpy(), cmap="magma", aspect="auto", interpolation="nearest")
            axis.set_title(f"|{name}|", fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
        figure.tight_layout()
        path = directory / "recurrent_weights.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
