"""Shared by benchmarks/moduli_lm.py and benchmarks/moduli_adding.py: run one recipe through ``compress.run``, collect
the metric (and the lottery re-init metric), print mean +- sample std tables and the verdict on the paper's ordering.

Not a benchmark itself. The ordering tested (the moduli paper, Mackey et al., 2024): at a given sparsity the
geometric (DoG) variants are the best sparse models, and the unregularised / plain-L1 ones the worst; "clearly" means
the gap also exceeds the sample std over seeds of both sides. The lottery check (new random init, the same masks,
retrained with the regulariser on) is judged "stable" when the re-init metric is no worse than the original by more
than the larger seed spread of the two.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import compress
from compress.spec import Recipe

# Which variants are the paper's "good geometry" and which its failing baselines.
GOOD = ("torus_dog", "klein_dog", "circle_dog")
BAD = ("no_reg", "plain_l1")


def machine_header(command: str) -> str:
    import platform

    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return (
        f"# command: {command}\n# date: {stamp}\n# machine: nproc {os.cpu_count()}, CPU {model}, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )


def run_recipe(recipe: dict, data: Mapping[str, Any], directory: Path, metric: str) -> dict[str, Any]:
    """One job through compress.run. Returns the metric, the lottery metric (when asked), the achieved sparsity of the
    pruned tensors, every weight matrix's kept fraction, the warnings' codes and the wall time."""
    started = time.time()
    result = compress.run(Recipe.model_validate(recipe), data, output_dir=directory, device="cpu")
    report = result.report
    kept = {r["name"]: r["nnz"] / r["numel"] for r in report["tensors"] if len(r["shape"]) >= 2}
    return {
        "value": float(result.metrics[metric]),
        "lottery": result.metrics.get(f"lottery_{metric}"),
        "pruned_sparsity": (report.get("pruning") or {}).get("sparsity"),
        "kept": kept,
        "warnings": sorted({w["code"] for w in result.warnings}),
        "seconds": time.time() - started,
    }


def mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {spread:.{digits}f}"


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def ordering(results: Mapping[str, list[float]], lower_is_better: bool = True) -> list[tuple[str, bool | None]]:
    """Verdict lines on one sparsity's results (variant -> values over seeds)."""
    sign = 1.0 if lower_is_better else -1.0
    stats = {v: _stats(x) for v, x in results.items() if x}
    good = [v for v in GOOD if v in stats]
    bad = [v for v in BAD if v in stats]
    lines: list[tuple[str, bool | None]] = []
    if not good or not bad:
        return lines
    best_good = min(good, key=lambda v: sign * stats[v][0])
    best_bad = min(bad, key=lambda v: sign * stats[v][0])
    gap = sign * (stats[best_bad][0] - stats[best_good][0])
    spread = max(stats[best_good][1], stats[best_bad][1])
    lines.append((f"best DoG ({best_good}) beats the best baseline ({best_bad}): gap {gap:+.4g}", gap > 0))
    lines.append((f"  gap exceeds the larger seed std ({spread:.4g})", gap > spread))
    every = all(sign * (stats[b][0] - stats[g][0]) > 0 for g in good for b in bad)
    lines.append(("every DoG variant beats every baseline (no_reg, plain_l1)", every))
    return lines


def lottery_lines(original: Mapping[str, list[float]], lottery: Mapping[str, list[float]]) -> list[tuple[str, bool]]:
    lines = []
    for variant, values in lottery.items():
        if not values or not original.get(variant):
            continue
        m0, s0 = _stats(original[variant])
        m1, s1 = _stats(values)
        spread = max(s0, s1)
        lines.append(
            (
                f"lottery {variant}: {m0:.4g} -> {m1:.4g} ({m1 / m0:.3f}x); stable (worse by <= seed std {spread:.4g})",
                m1 - m0 <= spread,
            )
        )
    return lines


def print_verdicts(lines: list[tuple[str, bool | None]]) -> None:
    for text, ok in lines:
        print(f"{'HELD' if ok else 'NOT HELD'}  {text}", flush=True)
