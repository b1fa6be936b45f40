"""One training loop for every task and method.

The loop knows nothing about tasks or methods: a :class:`TaskAdapter` supplies batches, the loss and the evaluation;
:class:`MethodHooks` add a penalty to the loss and act after each optimizer step (pruning schedules, masks). Callbacks
report progress and events, ask whether to cancel between steps, and the loop saves its full training state every
``state_every`` steps so that a run interrupted at any point and resumed gives the same result as an uninterrupted one
(on CPU; CUDA kernels are not bit-reproducible).

The training state is our own file, written with ``torch.save`` and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from compress.spec import TrainingSpec

STATE_VERSION = 1


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Cancelled(Exception):
    """Raised between steps when the cancel callback says so; the caller decides what to keep."""


class Diverged(FloatingPointError):
    """The loss became NaN or infinite: the run failed (a job reports it with error code ``diverged``)."""

    code = "diverged"


@dataclass(frozen=True)
class Progress:
    fraction: float
    epoch: int
    step: int
    total_steps: int
    metrics: dict[str, float]  # train_loss (running mean since the last evaluation), lr, the method's summary
    phase: str = "train"  # train, prune, fine_tune, lottery (the method's) - a pipeline adds reference, baselines
    evaluation: dict[str, float] | None = None  # the latest evaluation's metrics
    metric: str | None = None  # the task's headline metric (a key of ``evaluation``)


@dataclass
class Callbacks:
    """Everything the outside world hears and says during training; all optional."""

    progress: Callable[[Progress], None] | None = None
    event: Callable[[str, str, str, dict[str, Any]], None] | None = None  # level, type, message, data
    cancelled: Callable[[], bool] | None = None
    state_path: str | Path | None = None  # periodic training state; resumed from when it exists
    state_every: int = 200  # steps between training-state saves
    progress_every: float = 1.0  # seconds between progress reports
    events: int = 20  # "progress" events over a run (every total/events steps), besides one per evaluation

    def emit(self, level: str, kind: str, message: str, **data: Any) -> None:
        if self.event is not None:
            self.event(level, kind, message, data)


class TaskAdapter(Protocol):
    """What the loop needs from a task. Batches must be a deterministic function of (seed, epoch)."""

    metric: str  # the headline metric name, e.g. "valid_perplexity"
    lower_is_better: bool
    steps_per_epoch: int

    def batches(self, epoch: int) -> Iterator[Any]: ...

    def start_epoch(self, epoch: int) -> None: ...

    def loss(self, model: nn.Module, batch: Any) -> Tensor: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MethodHooks:
    """The compression method's part of training. The base class is the dense / predefined method: nothing to do."""

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        """Called once, before the first step (and before a resumed state is loaded)."""

    def penalty(self, model: nn.Module) -> Tensor | None:
        return None

    def after_step(self, step: int) -> None:
        """Called after optimizer step number ``step`` (1-based)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def phase(self, step: int) -> str:
        """What training is doing at ``step``: "train", or for pruning "prune" / "fine_tune" (shown to users)."""
        return "train"


@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    stopped_by_time_budget: bool = False
    resumed_from_step: int | None = None


def build_optimizer(spec: TrainingSpec, parameters) -> torch.optim.Optimizer:
    parameters = [p for p in parameters if p.requires_grad]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(parameters, lr=spec.lr, weight_decay=spec.weight_decay)


def build_scheduler(spec: TrainingSpec, optimizer: torch.optim.Optimizer, total_steps: int, lower_is_better: bool):
    if spec.lr_schedule == "plateau":  # the papers' language models divide the rate by 4 when validation stalls
        mode = "min" if lower_is_better else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.25, patience=0)
    if spec.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    return None


def _save_state(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".partial")
    torch.save(state, temporary)
    temporary.replace(path)


def _load_state(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path.name}: training state version {state.get('version')}, expected {STATE_VERSION}")
    return state


def train(
    adapter: TaskAdapter,
    model: nn.Module,
    spec: TrainingSpec,
    hooks: MethodHooks | None = None,
    callbacks: Callbacks | None = None,
    *,
    device: torch.device | None = None,
) -> TrainResult:
    hooks = hooks or MethodHooks()
    callbacks = callbacks or Callbacks()
    device = device or default_device()
    model.to(device)
    optimizer = build_optimizer(spec, model.parameters())
    total_steps = spec.epochs * adapter.steps_per_epoch
    scheduler = build_scheduler(spec, optimizer, total_steps, adapter.lower_is_better)
    hooks.attach(model, optimizer, total_steps)

    step, first_epoch, skip, history, resumed = 0, 0, 0, [], None
    running_loss, running_count = 0.0, 0
    state_path = Path(callbacks.state_path) if callbacks.state_path else None
    if state_path is not None and state_path.exists():
        state = _load_state(state_path)
        hooks.load_state_dict(state["hooks"])  # installs masks (buffers) before the model's state is loaded
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        adapter.load_state_dict(state["adapter"])
        torch.set_rng_state(state["rng"])
        step, history = state["step"], state["history"]
        running_loss, running_count = state["running_loss"], state["running_count"]
        first_epoch, skip = divmod(step, adapter.steps_per_epoch)
        resumed = step
        callbacks.emit("info", "message", f"resumed from step {step} of {total_steps}", step=step)

    def save_state() -> None:
        if state_path is None:
            return
        _save_state(
            state_path,
            {
                "version": STATE_VERSION,
                "step": step,
                "history": history,
                "running_loss": running_loss,
                "running_count": running_count,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "hooks": hooks.state_dict(),
                "adapter": adapter.state_dict(),
                "rng": torch.get_rng_state(),
            },
        )

    started = time.monotonic()
    last_report = -math.inf
    out_of_time = False
    # Evaluations inside epochs too (spec.evaluations over the run), so a two-epoch job still draws a curve.
    eval_every = max(1, math.ceil(total_steps / spec.evaluations))
    event_every = max(1, math.ceil(total_steps / max(1, callbacks.events)))
    latest: dict[str, float] | None = dict(history[-1]) if history else None

    def evaluate(epoch: int, *, epoch_end: bool) -> dict[str, float]:
        nonlocal running_loss, running_count, latest
        metrics = {"epoch": epoch + 1, "step": step, "train_loss": running_loss / max(running_count, 1)}
        metrics |= adapter.evaluate(model)
        metrics |= hooks.summary()
        metrics["epoch_end"] = epoch_end
        history.append(metrics)
        latest = metrics
        running_loss, running_count = 0.0, 0
        callbacks.emit(
            "info",
            "metrics",
            f"step {step}/{total_steps} ({hooks.phase(step)}): {adapter.metric} {metrics[adapter.metric]:.4g}",
            phase=hooks.phase(step),
            total_steps=total_steps,
            **metrics,
        )
        return metrics

    def report(epoch: int) -> None:
        # Right after an evaluation the running mean restarts: the evaluation's own training loss stands in.
        loss = running_loss / running_count if running_count else (latest or {}).get("train_loss", math.nan)
        metrics = {"train_loss": loss, "lr": optimizer.param_groups[0]["lr"]}
        metrics |= hooks.summary()
        progress = Progress(step / total_steps, epoch, step, total_steps, metrics, hooks.phase(step), latest)
        callbacks.progress(replace(progress, metric=adapter.metric))

    for epoch in range(first_epoch, spec.epochs):
        if skip == 0:
            adapter.start_epoch(epoch)
        model.train()
        for index, batch in enumerate(adapter.batches(epoch)):
            if index < skip:  # resuming mid-epoch: the batch order is a function of (seed, epoch), replay it
                continue
            if callbacks.cancelled is not None and callbacks.cancelled():
                raise Cancelled(f"cancelled at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss = adapter.loss(model, batch)
            penalty = hooks.penalty(model)
            total = loss if penalty is None else loss + penalty
            # One read of both numbers per step (each read is a device sync on CUDA).
            loss_value, total_value = torch.stack([loss.detach(), total.detach()]).tolist()
            if not math.isfinite(total_value):
                raise Diverged(
                    f"the loss became {total_value} at step {step + 1} (epoch {epoch + 1}): lower the learning rate "
                    "or turn on gradient clipping"
                )
            total.backward()
            if spec.clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
            optimizer.step()
            step += 1
            hooks.after_step(step)
            if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                scheduler.step()
            running_loss += loss_value
            running_count += 1
            now = time.monotonic()
            if callbacks.progress is not None and now - last_report >= callbacks.progress_every:
                last_report = now
                report(epoch)
            if step % event_every == 0 and step < total_steps:
                rate = (now - started) / max(1, step - (resumed or 0))
                callbacks.emit(
                    "info",
                    "progress",
                    f"step {step}/{total_steps} ({hooks.phase(step)}): loss {running_loss / running_count:.4g}",
                    phase=hooks.phase(step),
                    step=step,
                    total_steps=total_steps,
                    train_loss=running_loss / running_count,
                    seconds_left=rate * (total_steps - step),
                    **hooks.summary(),
                )
            if step % eval_every == 0 and index < adapter.steps_per_epoch - 1:
                evaluate(epoch, epoch_end=False)
            # Mid-epoch saves only; the end of an epoch is saved after its evaluation, below.
            if callbacks.state_every and step % callbacks.state_every == 0 and index < adapter.steps_per_epoch - 1:
                save_state()
            if spec.time_budget_s is not None and now - started >= spec.time_budget_s:
                out_of_time = True
                break
        skip = 0
        metrics = evaluate(epoch, epoch_end=True)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(metrics[adapter.metric])
        if not out_of_time:  # a budget stop is final: its state would describe a half-finished epoch
            save_state()
        if out_of_time:
            callbacks.emit("warning", "message", f"time budget of {spec.time_budget_s:g} s reached at step {step}")
            break
    if callbacks.progress is not None:
        report(spec.epochs - 1)
    final = dict(history[-1]) if history else adapter.evaluate(model)
    final.pop("epoch_end", None)
    return TrainResult(final, history, step, out_of_time, resumed)
