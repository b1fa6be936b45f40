"""What a job produces besides the sparse checkpoint, as the recipe's ``output`` section asks (spec.OutputSpec).

Called by :func:`compress.pipeline.run` once the checkpoint and the report exist:

- ``value_dtype`` float16/bfloat16: the checkpoint is rewritten with its values in that type, the model is loaded
  back from it and evaluated again, and the report's ``values`` section gives the metric before and after;
- ``measure_speed``: the runtime's batch-1 latency and batch-32 throughput against the dense equivalent
  (compress.runtime.speed); the metrics get ``speedup_latency`` and ``speedup_throughput``, the report a ``speed``
  section and ``speed.png`` (not for a dense job, whose dense equivalent is itself);
- ``export``: ``model.dense.safetensors`` and/or ``model.onnx`` (compress.export).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from compress import tasks
from compress.checkpoint import data_bytes, load_tensors, save_tensors
from compress.report import set_size_ratio

_FORMAT_KEYS = ("format", "format_version", "library_version", "tensors")


def rewrite_values(checkpoint: Path, value_dtype: str) -> None:
    """Store the checkpoint's floating-point values as ``value_dtype`` (same manifest, same tensors otherwise)."""
    tensors, manifest = load_tensors(checkpoint)
    fields = {k: v for k, v in manifest.items() if k not in _FORMAT_KEYS}
    save_tensors(checkpoint, tensors, fields, value_dtype=value_dtype)


def finish_outputs(
    recipe,
    *,
    checkpoint: Path,
    adapter,
    report: dict[str, Any],
    device: torch.device,
    output_dir: Path,
) -> tuple[list[Path], dict[str, float]]:
    """Apply the recipe's output section; returns (new files, new metrics) and extends ``report`` in place."""
    from compress.pipeline import export_dense, load_checkpoint

    output = recipe.output
    files: list[Path] = []
    metrics: dict[str, float] = {}
    if output.value_dtype != "float32":
        # both measured the same way, on the model loaded back from each file
        float32_model, _ = load_checkpoint(checkpoint, device=device)
        before = adapter.evaluate(float32_model)[adapter.metric]
        float32_bytes = checkpoint.stat().st_size
        rewrite_values(checkpoint, output.value_dtype)
        model, _ = load_checkpoint(checkpoint, device=device)
        after = adapter.evaluate(model)[adapter.metric]
        report["values"] = {
            "dtype": output.value_dtype,
            "metric": adapter.metric,
            "float32": before,
            output.value_dtype: after,
            "change": after - before,
            "checkpoint_bytes_float32": float32_bytes,
            "checkpoint_bytes": checkpoint.stat().st_size,
        }
        report["checkpoint_bytes"] = checkpoint.stat().st_size
        report["tensor_bytes"] = data_bytes(checkpoint)
        set_size_ratio(report)
        metrics[f"{output.value_dtype}_{adapter.metric}"] = after
    if output.measure_speed and tasks.get(recipe.task.type).sample_inputs is None:
        report["speed"] = {"skipped": f"the {recipe.task.type} task defines no sample inputs to time the model on"}
    elif output.measure_speed:
        from compress.runtime.speed import measure_speed

        speed = measure_speed(checkpoint, device)
        report["speed"] = speed
        metrics["speedup_latency"] = speed["speedup_latency"]
        metrics["speedup_throughput"] = speed["speedup_throughput"]
        if recipe.method.type != "dense":  # a dense model's dense equivalent is itself: nothing to picture
            files.append(save_speed_plot(speed, output_dir))
    dense_path = None
    if "dense_safetensors" in output.export:
        from compress.export import DENSE_NAME

        dense_path = export_dense(checkpoint, output_dir / DENSE_NAME)
        files.append(dense_path)
    if "onnx" in output.export:
        from compress.export import ONNX_NAME, ONNX_OPSET, export_onnx

        files.append(export_onnx(checkpoint, output_dir / ONNX_NAME, dense_path=dense_path))
        report["onnx"] = {"file": ONNX_NAME, "opset": ONNX_OPSET}
    report.setdefault("metrics", {}).update(metrics)
    return files, metrics


def speed_figure(speed: dict[str, Any]):
    """The figure of ``speed.png``: microseconds per token, dense equivalent vs runtime, at batch 1 and batch 32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for axis, label in zip(axes, ("latency", "throughput"), strict=True):
        times = speed[f"{label}_us_per_token"]
        bars = axis.bar(
            ["dense equivalent", "this model\n(runtime)"],
            [times["dense"], times["runtime"]],
            color=["tab:gray", "tab:green"],
        )
        axis.bar_label(bars, fmt="%.3g µs", fontsize=8)
        axis.margins(y=0.15)  # room for the labels
        batch = 1 if label == "latency" else 32
        axis.set_title(f"batch {batch} ({label}): speed-up {speed[f'speedup_{label}']:.2f}×", fontsize=9)
        axis.set_ylabel("µs per token (lower is faster)")
    threads = speed["threads"]
    figure.suptitle(
        f"Inference speed: this model vs its dense equivalent ({speed['device']}, {threads} thread"
        f"{'' if threads == 1 else 's'})",
        fontsize=10,
    )
    figure.text(
        0.5,
        0.01,
        "Timings on a shared machine are noisy: a few percent either way may be noise.",
        ha="center",
        fontsize=7,
    )
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return figure


def save_speed_plot(speed: dict[str, Any], directory: Path) -> Path:
    """``speed.png`` (see :func:`speed_figure`)."""
    import matplotlib.pyplot as plt

    figure = speed_figure(speed)
    path = directory / "speed.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def rewrite_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2))
