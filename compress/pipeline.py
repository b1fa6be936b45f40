"""The library's front door: one recipe in, one sparse model with its evidence out.

    result = compress.run(recipe, {"train": "ptb.train.txt", "valid": "ptb.valid.txt"}, callbacks, output_dir="out")

writes ``model.safetensors`` (the sparse checkpoint, manifest inside), ``report.json`` and PNG plots into
``output_dir``, and returns a :class:`Result`. ``load_checkpoint(path)`` rebuilds the model from the recipe stored in
the manifest - nothing is ever unpickled. Data paths by task: language_model and sequence_tagging take ``train`` and
optionally ``valid``; navigation optionally ``train`` (an .npz of trajectories, else generated); adding none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.checkpoint import CheckpointError, load_tensors, save_tensors
from compress.methods import PruningHooks, build_hooks
from compress.models import LanguageModel, SequenceTagger
from compress.outputs import finish_outputs, rewrite_report
from compress.pruning import reinitialize
from compress.report import build_report, dense_bytes_of, save_moduli_plot, save_plots
from compress.spec import DenseMethod, Recipe
from compress.tasks.generated import AddingAdapter, NavigationAdapter, adding_model, navigation_model
from compress.tasks.text import LanguageModelAdapter, TaggingAdapter
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


# -- building ---------------------------------------------------------------------------------------------------------


def _require(data: Mapping[str, Any], key: str, task: str) -> Path:
    if key not in data or data[key] is None:
        raise ValueError(f"the {task} task needs a '{key}' data file")
    return Path(data[key])


def build_adapter(recipe: Recipe, data: Mapping[str, Any], device: torch.device):
    task, training, spec = recipe.task, recipe.training, recipe.model
    if task.type == "language_model":
        return LanguageModelAdapter(
            _require(data, "train", task.type),
            data.get("valid"),
            max_vocab=task.max_vocab,
            batch_size=training.batch_size,
            bptt=training.bptt,
            device=device,
        )
    if task.type == "sequence_tagging":
        return TaggingAdapter(
            _require(data, "train", task.type),
            data.get("valid"),
            max_vocab=task.max_vocab,
            batch_size=training.batch_size,
            seed=training.seed,
            device=device,
        )
    if task.type == "navigation":
        return NavigationAdapter(
            task,
            spec,
            batch_size=training.batch_size,
            seed=training.seed,
            trajectories=data.get("train"),
            device=device,
        )
    return AddingAdapter(task, spec, batch_size=training.batch_size, seed=training.seed, device=device)


def build_model(recipe: Recipe, sizes: Mapping[str, int]) -> nn.Module:
    """The recipe's model; ``sizes`` carries what the data decides (vocab_size, num_tags)."""
    task, spec, method = recipe.task, recipe.model, recipe.method
    if task.type == "language_model":
        return LanguageModel(spec, method, sizes["vocab_size"])
    if task.type == "sequence_tagging":
        return SequenceTagger(spec, method, sizes["vocab_size"], sizes["num_tags"])
    if task.type == "navigation":
        return navigation_model(task, spec, method, recipe.training.batch_size)
    return adding_model(task, spec, method, recipe.training.batch_size)


def _sizes(adapter) -> dict[str, int]:
    sizes = {}
    if hasattr(adapter, "vocab"):
        sizes["vocab_size"] = len(adapter.vocab)
    if hasattr(adapter, "num_tags"):
        sizes["num_tags"] = adapter.num_tags
    return sizes


def _vocabularies(adapter) -> dict[str, list[str]]:
    found = {}
    if hasattr(adapter, "vocab"):
        found["vocabulary"] = list(adapter.vocab.tokens)
    if hasattr(adapter, "tags"):
        found["tags"] = list(adapter.tags)
    return found


def _load_initial_weights(model: nn.Module, path: Path) -> None:
    """``init_from``: dense safetensors weights (a sparseq checkpoint or a plain file) with matching names."""
    from safetensors.torch import load_file

    try:
        tensors, _ = load_tensors(path)
    except CheckpointError:
        try:
            tensors = load_file(str(path))
        except Exception as error:
            raise ValueError(f"init_from: {path.name} is not a readable safetensors file ({error})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"init_from: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    wrong = [
        f"{n}: {tuple(tensors[n].shape)} vs {tuple(own[n].shape)}" for n in own if tensors[n].shape != own[n].shape
    ]
    if wrong:
        raise ValueError(f"init_from: shapes differ from the recipe's model: {wrong[:5]}")
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
    """Scales progress so that the main run, each baseline and the lottery check share one 0..1 bar."""

    def __init__(self, callbacks: Callbacks, count: int) -> None:
        self.callbacks, self.count, self.index = callbacks, count, 0

    def for_phase(self, name: str) -> Callbacks:
        index, count, outer = self.index, self.count, self.callbacks
        self.index += 1

        def progress(p: Progress) -> None:
            if outer.progress is not None:
                outer.progress(replace(p, fraction=(index + p.fraction) / count, metrics={**p.metrics, "phase": name}))

        state = outer.state_path if index == 0 else None  # only the main run resumes mid-way
        return replace(outer, progress=progress, state_path=state)


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
    phases = _Phases(callbacks, 1 + len(recipe.baselines) + int(lottery))

    torch.manual_seed(recipe.training.seed)
    adapter = build_adapter(recipe, data, device)
    if getattr(adapter, "held_out", False):
        callbacks.emit("info", "message", "no validation file: the last 10% of the training data is held out")
    sizes = _sizes(adapter)
    model = build_model(recipe, sizes)
    if recipe.init_from:
        _load_initial_weights(model, _require(data, "init_from", recipe.task.type))
    hooks = build_hooks(recipe.method, seed=recipe.training.seed)
    callbacks.emit("info", "message", f"training {sum(p.numel() for p in model.parameters()):,} parameters on {device}")
    outcome = train(adapter, model, recipe.training, hooks, phases.for_phase("main"), device=device)
    metrics = dict(outcome.metrics)
    targets: dict[str, float] = {}
    if isinstance(hooks, PruningHooks):
        masks = hooks.finish()
        targets = dict.fromkeys(masks, recipe.method.target_sparsity)
        if lottery:
            metrics |= _lottery(recipe, adapter, sizes, masks, phases.for_phase("lottery"), device, adapter.metric)
    model.to("cpu")

    baselines = {}
    for name in recipe.baselines:
        if name == "dense_full":
            baseline_recipe = _dense_recipe(recipe)
        else:
            nonzero = sum(int((p != 0).sum()) for p in model.parameters())
            baseline_recipe = _dense_same_params(recipe, nonzero, sizes)
        torch.manual_seed(recipe.training.seed)
        baseline = build_model(baseline_recipe, sizes)
        result = train(adapter, baseline, recipe.training, None, phases.for_phase(name), device=device)
        baselines[name] = {
            **result.metrics,
            "hidden_size": baseline_recipe.model.hidden_size,
            "parameters": sum(p.numel() for p in baseline.parameters()),
        }
        callbacks.emit(
            "info",
            "metrics",
            f"baseline {name}: {adapter.metric} {result.metrics[adapter.metric]:.4g}",
            baseline=name,
            **result.metrics,
        )

    checkpoint = output_dir / "model.safetensors"
    save_checkpoint(
        checkpoint,
        model,
        recipe,
        metrics=metrics,
        history=outcome.history,
        sizes=sizes,
        baselines=baselines,
        **_vocabularies(adapter),
    )
    report = build_report(
        model,
        checkpoint_bytes=checkpoint.stat().st_size,
        dense_bytes=dense_bytes_of(model),
        targets=targets,
        history=outcome.history,
    )
    report["metrics"], report["baselines"] = metrics, baselines
    report_path = output_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=2))
    files = [checkpoint, report_path, *save_plots(model, outcome.history, output_dir, adapter.metric)]
    if isinstance(hooks, PruningHooks) and hooks.regularizer is not None:
        files += save_moduli_plot(hooks.regularizer, output_dir)
    # The recipe's output section (compress.outputs): value dtype, measured speed, export artifacts.
    extra_files, extra_metrics = finish_outputs(
        recipe, checkpoint=checkpoint, adapter=adapter, report=report, device=device, output_dir=output_dir
    )
    files += extra_files
    metrics |= extra_metrics
    rewrite_report(report_path, report)
    return Result(model, metrics, outcome.history, report, checkpoint, files, baselines)


def _lottery(recipe, adapter, sizes, masks, callbacks, device, metric) -> dict[str, float]:
    """Re-initialise, keep only the masks, retrain with the same settings (and the regulariser): the stability test."""
    model = build_model(recipe, sizes)
    reinitialize(model, recipe.training.seed + 1)
    hooks = PruningHooks(recipe.method, seed=recipe.training.seed, fixed_masks=masks)
    outcome = train(adapter, model, recipe.training, hooks, callbacks, device=device)
    hooks.finish()
    return {f"lottery_{metric}": outcome.metrics[metric]}
