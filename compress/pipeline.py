"""The library's front door: one recipe in, one sparse model with its evidence out.

    result = compress.run(recipe, {"train": "ptb.train.txt", "valid": "ptb.valid.txt"}, callbacks, output_dir="out")

writes ``model.safetensors`` (the sparse checkpoint, manifest inside), ``report.json`` and PNG plots into
``output_dir``, and returns a :class:`Result`. ``load_checkpoint(path)`` rebuilds the model from the recipe stored in
the manifest - nothing is ever unpickled. Data paths by task: language_model and sequence_tagging take ``train`` and
optionally ``valid``; navigation optionally ``train`` (an .npz of trajectories, else generated); adding none.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress import tasks
from compress.checkpoint import CheckpointError, data_bytes, load_tensors, save_tensors
from compress.methods import PruningHooks, build_hooks
from compress.outputs import finish_outputs, rewrite_report
from compress.problems.text import frequency_rank
from compress.pruning import reinitialize
from compress.report import (
    build_report,
    dense_bytes_of,
    run_label,
    save_moduli_plot,
    save_plots,
    save_tradeoff_plot,
)
from compress.spec import DenseMethod, Recipe
from compress.train import Callbacks, Progress, default_device, train


@dataclass
class Result:
    model: nn.Module
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    report: dict[str, Any]
    checkpoint: Path | None = None
    files: list[Path] = field(default_factory=list)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)  # name, value, reference, ratio, lower_is_better, kind
    warnings: list[dict[str, Any]] = field(default_factory=list)  # code, message, tensor


# -- building ---------------------------------------------------------------------------------------------------------


def _require(data: Mapping[str, Any], key: str, task: str) -> Path:
    if key not in data or data[key] is None:
        raise ValueError(f"the {task} task needs a '{key}' data file")
    return Path(data[key])


def build_adapter(recipe: Recipe, data: Mapping[str, Any], device: torch.device):
    """The task's adapter (data in, loss and evaluation out), judged by the metric its definition names."""
    definition = tasks.get(recipe.task.type)
    adapter = definition.build_adapter(recipe, data, device)
    adapter.metric, adapter.lower_is_better = definition.metric.name, definition.metric.lower_is_better
    return adapter


def build_model(recipe: Recipe, sizes: Mapping[str, int]) -> nn.Module:
    """The recipe's model; ``sizes`` carries what the data decides (vocab_size, num_tags)."""
    return tasks.get(recipe.task.type).build_model(recipe, sizes)


def _sizes(adapter, recipe: Recipe) -> dict[str, int]:
    sizes = {}
    if hasattr(adapter, "vocab"):
        sizes["vocab_size"] = len(adapter.vocab)
        embedding = getattr(recipe.method, "embedding", None)
        if adapter.user_vocabulary and embedding is not None and embedding.order != "random":
            sizes["reordered"] = 1  # the user's ids are kept; the predefined embedding ranks them by frequency
    if hasattr(adapter, "num_tags"):
        sizes["num_tags"] = adapter.num_tags
    return sizes


def _model_for(recipe: Recipe, sizes: Mapping[str, int], adapter) -> nn.Module:
    model = build_model(recipe, sizes)
    if sizes.get("reordered"):
        model.token_rank.copy_(frequency_rank(adapter.vocab))
    return model


def _vocabularies(adapter) -> dict[str, list[str]]:
    found = {}
    if hasattr(adapter, "vocab"):
        found["vocabulary"] = list(adapter.vocab.tokens)
    if hasattr(adapter, "tags"):
        found["tags"] = list(adapter.tags)
    return found


class WeightsMismatch(ValueError):
    code = "weights_mismatch"


def _load_initial_weights(model: nn.Module, path: Path) -> None:
    """``init_from``: dense safetensors weights (a sparseq checkpoint or a plain file) with the model's names and
    shapes (compress.weights.weight_contract)."""
    from safetensors.torch import load_file

    from compress.weights import compare_weights

    try:
        tensors, _ = load_tensors(path)
    except CheckpointError:
        try:
            tensors = load_file(str(path))
        except Exception as error:
            raise ValueError(f"init_from: {path.name} is not a readable safetensors file ({error})") from None
    own = model.state_dict()
    mismatch = compare_weights(
        {n: list(t.shape) for n, t in own.items()}, {n: list(t.shape) for n, t in tensors.items()}
    )
    if mismatch:
        raise WeightsMismatch(f"init_from: the weights do not fit the recipe's model: {mismatch.describe()}")
    model.load_state_dict(tensors)


# -- checkpoints ------------------------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: nn.Module, recipe: Recipe, **fields: Any) -> dict[str, Any]:
    manifest = {"recipe": json.loads(recipe.model_dump_json()), "method": recipe.method.type, **fields}
    return save_tensors(path, model.state_dict(), manifest)


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the manifest's recipe and load its weights; nothing is unpickled."""
    tensors, manifest = load_tensors(path)
    try:
        recipe = Recipe.model_validate(manifest["recipe"])
        sizes = manifest.get("sizes", {})
    except Exception as error:
        raise CheckpointError(f"{Path(path).name}: the manifest's recipe is not valid ({error})") from None
    model = build_model(recipe, sizes)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{Path(path).name}: weights do not fit the recipe's model ({error})") from None
    return model.to(device), manifest


def export_dense(path: str | Path, out: str | Path) -> Path:
    """A plain safetensors file with PyTorch's dense parameter names and shapes (predefined layers expanded)."""
    from safetensors.torch import save_file

    from compress.predefined import SparseEmbedding, SparseRecurrent

    model, manifest = load_checkpoint(path)
    dense: dict[str, torch.Tensor] = {}
    expanded: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, SparseRecurrent | SparseEmbedding):
            for name, (weight, _) in module.dense_equivalent().items():
                dense[f"{prefix}.{name}" if prefix else name] = weight.contiguous()
            expanded.add(prefix)
    for name, tensor in model.state_dict().items():
        if not any(name.startswith(f"{p}.") for p in expanded if p):
            dense[name] = tensor.contiguous()
    out = Path(out)
    save_file(dense, str(out), metadata={"recipe": json.dumps(manifest["recipe"])})
    return out


# -- running ----------------------------------------------------------------------------------------------------------


class _Phases:
    """Scales progress so that the main run, the lottery check, the reference and each baseline share one 0..1 bar,
    names the phase (the method's own inside the main run) and estimates the seconds the whole job still needs."""

    def __init__(self, callbacks: Callbacks, count: int) -> None:
        self.callbacks, self.count, self.index = callbacks, count, 0
        self.started = time.monotonic()
        self.resumed_fraction: float | None = None
        self.main_last: Progress | None = None  # the main run's last report, as sent

    def conclude(self) -> None:
        """Report the main run's last state once more, at 100%: the lottery check, the reference and the baselines
        train after it, and a finished job's progress report should say where the job itself ended (its phase,
        sparsity and metric), not where its reference did."""
        if self.callbacks.progress is not None and self.main_last is not None:
            last = self.main_last
            self.callbacks.progress(replace(last, fraction=1.0, metrics={**last.metrics, "eta_s": 0.0}))

    def for_phase(self, name: str | None = None) -> Callbacks:
        """``name``: the phase shown to users; None inside the main run, where the method names it."""
        index, count, outer = self.index, self.count, self.callbacks
        self.index += 1

        def progress(p: Progress) -> None:
            if outer.progress is None:
                return
            fraction = (index + p.fraction) / count
            if self.resumed_fraction is None:  # a resumed run: time counts from where it picked up
                self.resumed_fraction = fraction
            done = fraction - self.resumed_fraction
            elapsed = time.monotonic() - self.started
            eta = elapsed / done * (1 - fraction) if done > 0 and elapsed > 1 else None
            eta = 0.0 if fraction >= 1 else eta
            phase = name or p.phase
            sent = replace(p, fraction=fraction, phase=phase, metrics={**p.metrics, "eta_s": eta})
            if index == 0:
                self.main_last = sent
            outer.progress(sent)

        def event(level: str, kind: str, message: str, data: dict[str, Any]) -> None:
            if outer.event is not None and name is not None and "phase" in data:
                data = {**data, "phase": name}
                message = f"{name}: {message}"
            if outer.event is not None:
                outer.event(level, kind, message, data)

        state = outer.state_path if index == 0 else None  # only the main run resumes mid-way
        return replace(outer, progress=progress, event=event, state_path=state)


def _dense_recipe(recipe: Recipe, hidden: int | None = None) -> Recipe:
    """The recipe as a dense baseline, optionally at another hidden size (a tied embedding follows it)."""
    model = recipe.model
    if hidden is not None:
        model = model.model_copy(update={"hidden_size": hidden})
        if model.tie_weights:
            model = model.model_copy(update={"embedding_size": hidden})
    return recipe.model_copy(update={"model": model, "method": DenseMethod(), "baselines": []})


def _dense_same_params(recipe: Recipe, target: int, sizes: Mapping[str, int]) -> Recipe:
    """The dense recipe whose model has the stored parameter count nearest ``target`` (hidden size by bisection)."""

    def count(hidden: int) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in build_model(_dense_recipe(recipe, hidden), sizes).parameters())

    low, high = 1, recipe.model.hidden_size * 4  # the first hidden size whose count reaches the target
    while low < high:
        middle = (low + high) // 2
        if count(middle) < target:
            low = middle + 1
        else:
            high = middle
    candidates = [h for h in (low - 1, low) if h >= 1]
    return _dense_recipe(recipe, min(candidates, key=lambda h: abs(count(h) - target)))


def run(
    recipe: Recipe,
    data: Mapping[str, str | Path | None] | None = None,
    callbacks: Callbacks | None = None,
    *,
    output_dir: str | Path,
    device: torch.device | str | None = None,
) -> Result:
    callbacks = callbacks or Callbacks()
    device = torch.device(device) if device is not None else default_device()
    data = dict(data or {})
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lottery = getattr(recipe.method, "lottery_check", False)
    reference_kind = recipe.reference_kind()
    extra_runs = list(recipe.baselines)  # dense models trained after the main run: baselines and the reference
    if reference_kind in ("dense_full", "dense_same_params") and reference_kind not in extra_runs:
        extra_runs.append(reference_kind)
    phases = _Phases(callbacks, 1 + len(extra_runs) + int(lottery))

    torch.manual_seed(recipe.training.seed)
    adapter = build_adapter(recipe, data, device)
    if getattr(adapter, "held_out", False):
        callbacks.emit("info", "message", "no validation file: the last 10% of the training data is held out")
    sizes = _sizes(adapter, recipe)
    model = _model_for(recipe, sizes, adapter)
    initial: dict[str, float] | None = None
    if recipe.init_from:
        _load_initial_weights(model, _require(data, "init_from", recipe.task.type))
        initial = adapter.evaluate(model.to(device))  # the uploaded model itself is this job's reference
        callbacks.emit(
            "info",
            "metrics",
            f"reference (the uploaded weights): {adapter.metric} {initial[adapter.metric]:.4g}",
            phase="reference",
            **initial,
        )
    hooks = build_hooks(recipe.method, seed=recipe.training.seed)
    callbacks.emit("info", "message", f"training {sum(p.numel() for p in model.parameters()):,} parameters on {device}")
    outcome = train(adapter, model, recipe.training, hooks, phases.for_phase(), device=device)
    metrics = dict(outcome.metrics)
    targets: dict[str, float] = {}
    at_floor: set[str] = set()
    if isinstance(hooks, PruningHooks):
        at_floor = set(hooks.pruner.at_floor)
        masks = hooks.finish()
        targets = dict.fromkeys(masks, recipe.method.target_sparsity)
        if lottery:
            metrics |= _lottery(recipe, adapter, sizes, masks, phases.for_phase("lottery"), device, adapter.metric)
    model.to("cpu")

    trained: dict[str, dict[str, Any]] = {}
    for name in extra_runs:
        if name == "dense_full":
            baseline_recipe = _dense_recipe(recipe)
        else:
            nonzero = sum(int((p != 0).sum()) for p in model.parameters())
            baseline_recipe = _dense_same_params(recipe, nonzero, sizes)
        phase = "reference" if name == reference_kind else name
        torch.manual_seed(recipe.training.seed)
        baseline = build_model(baseline_recipe, sizes)
        result = train(adapter, baseline, recipe.training, None, phases.for_phase(phase), device=device)
        trained[name] = {
            **result.metrics,
            "hidden_size": baseline_recipe.model.hidden_size,
            "parameters": sum(p.numel() for p in baseline.parameters()),
            "history": result.history,
        }
        callbacks.emit(
            "info",
            "metrics",
            f"{phase} ({name}): {adapter.metric} {result.metrics[adapter.metric]:.4g}",
            baseline=name,
            **result.metrics,
        )
    baselines = {n: {k: v for k, v in trained[n].items() if k != "history"} for n in recipe.baselines}
    if reference_kind == "initial_weights":
        reference = {**initial, "kind": reference_kind}
    elif reference_kind is not None:
        reference = {k: v for k, v in trained[reference_kind].items() if k != "history"} | {"kind": reference_kind}
    else:
        reference = None
    verdict = judge(adapter.metric, adapter.lower_is_better, metrics[adapter.metric], reference, recipe)
    phases.conclude()

    checkpoint = output_dir / "model.safetensors"
    save_checkpoint(
        checkpoint,
        model,
        recipe,
        metrics=metrics,
        history=outcome.history,
        sizes=sizes,
        baselines=baselines,
        reference=reference,
        verdict=verdict,
        **_vocabularies(adapter),
    )
    report = build_report(
        model,
        checkpoint_bytes=checkpoint.stat().st_size,
        tensor_bytes=data_bytes(checkpoint),
        dense_bytes=dense_bytes_of(model),
        targets=targets,
        history=outcome.history,
    )
    warnings = find_warnings(report, verdict, recipe, at_floor)
    report |= {"metrics": metrics, "baselines": baselines, "reference": reference, "verdict": verdict}
    report["warnings"] = warnings
    for warning in warnings:
        callbacks.emit("warning", "message", warning["message"], code=warning["code"], tensor=warning["tensor"])
    report_path = output_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=2))
    compared = {run_label(n, reference_kind): trained[n] for n in trained}
    if reference_kind == "initial_weights":  # evaluated before training: a horizontal line at its metric
        compared = {"reference: your weights": initial} | compared
    files = [checkpoint, report_path]
    files += save_plots(model, outcome.history, output_dir, adapter.metric, compared=compared, title=summary(recipe))
    if isinstance(hooks, PruningHooks) and hooks.regularizer is not None:
        files += save_moduli_plot(hooks.regularizer, output_dir)
    # The recipe's output section (compress.outputs): value dtype, measured speed, export artifacts.
    extra_files, extra_metrics = finish_outputs(
        recipe, checkpoint=checkpoint, adapter=adapter, report=report, device=device, output_dir=output_dir
    )
    files += extra_files
    metrics |= extra_metrics
    compressed = recipe.method.type != "dense"  # a dense model's dense equivalent is itself
    for warning in speed_warnings(report.get("speed")) if compressed else []:
        warnings.append(warning)  # the same list as report["warnings"] and the result's
        callbacks.emit("warning", "message", warning["message"], code=warning["code"], tensor=None)
    files += save_tradeoff_plot(
        report, output_dir, adapter.metric, trained, reference_kind, compare_speed=compressed, title=summary(recipe)
    )
    rewrite_report(report_path, report)
    return Result(model, metrics, outcome.history, report, checkpoint, files, baselines, verdict, warnings)


def summary(recipe: Recipe) -> str:
    """One line that names the job: task, model, method and its main settings, training length."""
    model, method = recipe.model, recipe.method
    parts = [recipe.task.type, f"{model.cell} {model.num_layers}x{model.hidden_size}"]
    if method.type in ("moduli_pruning", "magnitude_pruning"):
        geometry = f" {method.space}/{method.inhibitor}" if method.type == "moduli_pruning" else ""
        parts.append(
            f"{method.type}{geometry} to {method.target_sparsity:.0%} ({method.allocation}, {method.targets}"
            f"{', floors' if method.floors else ''})"
        )
    elif method.type == "predefined":
        pieces = []
        if method.recurrent is not None:
            pieces.append(
                f"budget of 1/{method.recurrent.budget_of.hidden_scale:g} width"
                if method.recurrent.budget_of
                else f"k={method.recurrent.components}"
            )
        if method.embedding is not None:
            pieces.append(f"embedding {method.embedding.blocks} blocks at {method.embedding.density:g}")
        parts.append(f"predefined ({', '.join(pieces)})")
    else:
        parts.append(method.type)
    epochs = recipe.training.epochs
    parts.append(f"{epochs} epoch{'s' if epochs != 1 else ''}")
    return " · ".join(parts)


def judge(
    metric: str, lower_is_better: bool, value: float, reference: Mapping[str, Any] | None, recipe: Recipe
) -> dict[str, Any]:
    """The job's headline: its metric against its reference. ``ratio`` is value / reference; ``within_tolerance``
    says whether it is no worse than ``recipe.quality_tolerance`` allows (see the recipe's field)."""
    verdict: dict[str, Any] = {"name": metric, "value": value, "lower_is_better": lower_is_better}
    verdict |= {"reference": None, "ratio": None, "reference_kind": None, "within_tolerance": None}
    if reference is None or metric not in reference:
        return verdict
    ref = float(reference[metric])
    ratio = value / ref if ref else (math.inf if value else 1.0)
    tolerance = recipe.quality_tolerance
    within = ratio <= tolerance if lower_is_better else ratio >= 1 / tolerance
    verdict |= {"reference": ref, "ratio": ratio, "reference_kind": reference["kind"], "within_tolerance": within}
    return verdict


def _warning(code: str, message: str, tensor: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "tensor": tensor}


# A measured speed-up below this is reported: the runtime races the dense kernel at load and falls back to it, so a
# ratio under 1 is either timing noise of a busy machine or a wrong pick, and the user should know either way.
SLOWER_THAN_DENSE = 0.9


def speed_warnings(speed: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A ``slower_than_dense`` warning for each way of calling (batch 1, batch 32) measured below the dense model."""
    if not speed or "speedup_latency" not in speed:
        return []
    found = []
    for label, what in (("latency", "batch-1 latency"), ("throughput", "batch-32 throughput")):
        ratio = speed[f"speedup_{label}"]
        if ratio < SLOWER_THAN_DENSE:
            found.append(
                _warning(
                    "slower_than_dense",
                    f"the runtime measured {ratio:.2f}x the dense equivalent's {what} on this worker "
                    f"({speed['device']}, {speed['threads']} thread(s)); timings on a busy machine scatter, and "
                    "compress.runtime.load measures again on the machine that serves the model",
                )
            )
    return found


def find_warnings(report: Mapping[str, Any], verdict: Mapping[str, Any], recipe: Recipe, at_floor: set[str]) -> list:
    """What a user must know before trusting the result: tensors pruned away or held at their floor, a target not
    reached, a result worse than the reference allows."""
    warnings = []
    rows = {row["name"]: row for row in report["tensors"]}
    for name, row in rows.items():
        if len(row["shape"]) >= 2 and row["nnz"] == 0:
            warnings.append(_warning("tensor_pruned_away", f"{name}: every weight is zero, nothing passes it", name))
    for name in sorted(at_floor):
        row = rows[name]
        warnings.append(
            _warning(
                "tensor_at_floor",
                f"{name}: kept {row['nnz']} of {row['numel']} weights ({row['nnz'] / row['numel']:.1%}), more than "
                "its share of the target: its floor keeps one weight per row and per column",
                name,
            )
        )
    pruning = report.get("pruning")
    if pruning and pruning["sparsity"] < pruning["target_sparsity"] - 0.005:
        warnings.append(
            _warning(
                "sparsity_not_reached",
                f"the pruned tensors reached {pruning['sparsity']:.1%} sparsity, not the "
                f"{pruning['target_sparsity']:.1%} asked: {_what_keeps_more(recipe)}",
            )
        )
    if verdict.get("within_tolerance") is False:
        better = "lower" if verdict["lower_is_better"] else "higher"
        warnings.append(
            _warning(
                "worse_than_reference",
                f"{verdict['name']} {verdict['value']:.4g} against {verdict['reference']:.4g} for the reference "
                f"({verdict['reference_kind']}; {better} is better): {verdict['ratio']:.3g}x, beyond the quality "
                f"tolerance of {recipe.quality_tolerance:g}",
            )
        )
    return warnings


def _what_keeps_more(recipe: Recipe) -> str:
    """Why pruning kept more than its target, and what the recipe can change: ``method.min_density``, the floors
    (``method.floors``), or the target itself."""
    method = recipe.method
    min_density, floors = getattr(method, "min_density", 0.0), getattr(method, "floors", False)
    causes, fixes = [], []
    if min_density > 0:
        causes.append(f"method.min_density keeps at least {min_density:.1%} of each tensor")
        fixes.append("lower method.min_density")
    if floors:
        causes.append("the floors keep one input per output unit and one output per input feature")
        fixes.append("set method.floors: false")
    fixes.append("ask a lower method.target_sparsity")
    cause = " and ".join(causes) if causes else "some tensors could not be pruned further"
    return f"{cause}; {' or '.join(fixes)}"


def _lottery(recipe, adapter, sizes, masks, callbacks, device, metric) -> dict[str, float]:
    """Re-initialise, keep only the masks, retrain with the same settings (and the regulariser): the stability test."""
    model = _model_for(recipe, sizes, adapter)
    reinitialize(model, recipe.training.seed + 1)
    hooks = PruningHooks(recipe.method, seed=recipe.training.seed, fixed_masks=masks)
    outcome = train(adapter, model, recipe.training, hooks, callbacks, device=device)
    hooks.finish()
    return {f"lottery_{metric}": outcome.metrics[metric]}
