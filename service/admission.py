"""Admission by the estimate: a job whose recipe would cost more than the service allows is refused at creation.

``compress.estimate`` prices the recipe on PyTorch's meta device (shapes only, no memory) in milliseconds, so a
recipe that asks for 16 TB of training memory is a 422 naming the figure and the limit, never a worker killed by the
kernel on every delivery. The recipe schema's own bounds (compress.spec) have already refused the absurd sizes.
"""

from __future__ import annotations

import functools

from compress import tasks
from compress.spec import Recipe
from service.errors import Unprocessable
from service.settings import Settings


@functools.cache
def _estimator():
    """Imported on the first job: it brings in torch and the model builders (the API's other routes need neither)."""
    from compress.estimate import estimate

    return estimate


def runs(recipe: Recipe) -> int:
    """Trainings a job performs: the main one, one per baseline, and the lottery check's retraining."""
    return 1 + len(recipe.baselines) + int(getattr(recipe.method, "lottery_check", False))


def work_tokens(recipe: Recipe, train_tokens: int | None) -> tuple[int, str]:
    """Tokens the job trains on in all, and the recipe field that scales it most directly."""
    task, training = recipe.task, recipe.training
    if tasks.get(task.type).text:  # how much text the files hold decides the work
        per_epoch = train_tokens or 0
    else:
        per_epoch = task.steps_per_epoch * training.batch_size * task.sequence_length
    return training.epochs * per_epoch * runs(recipe), "training.epochs"


def _refuse(what: str, figure: int, limit: int, setting: str, param: str, advice: str) -> Unprocessable:
    return Unprocessable(
        f"{what} is {figure:,}, over this service's limit of {limit:,} ({setting}); {advice}",
        param=f"recipe.{param}",
        code="limit_exceeded",
    )


def admit(recipe: Recipe, settings: Settings, *, train_tokens: int | None = None) -> None:
    """Raise a 422 naming the first limit the recipe's estimate passes; return quietly when it fits."""
    try:
        estimate = _estimator()(recipe)
    except (ValueError, RuntimeError) as error:  # a combination only the model builders can see is impossible
        raise Unprocessable(str(error)[:500], param="recipe", code="invalid_recipe") from None
    if estimate.parameters > settings.max_parameters:
        raise _refuse(
            "the model's parameter count",
            estimate.parameters,
            settings.max_parameters,
            "SPARSEQ_MAX_PARAMETERS",
            "model.hidden_size",
            "use a smaller model.hidden_size, embedding_size, num_layers or task.max_vocab",
        )
    if estimate.training_memory_bytes > settings.max_training_memory_bytes:
        raise _refuse(
            "the estimated training memory in bytes",
            estimate.training_memory_bytes,
            settings.max_training_memory_bytes,
            "SPARSEQ_MAX_TRAINING_MEMORY_BYTES",
            "training.batch_size",
            "use a smaller training.batch_size, sequence length or model",
        )
    tokens, field = work_tokens(recipe, train_tokens)
    if tokens > settings.max_work_tokens:
        raise _refuse(
            f"the work (tokens trained on over {runs(recipe)} run(s))",
            tokens,
            settings.max_work_tokens,
            "SPARSEQ_MAX_WORK_TOKENS",
            field,
            "use fewer training.epochs or task.steps_per_epoch, a smaller batch or shorter sequences",
        )
    budget = recipe.training.time_budget_s
    if budget is not None and budget > settings.job_time_limit_s:
        raise _refuse(
            "training.time_budget_s",
            round(budget),
            settings.job_time_limit_s,
            "SPARSEQ_JOB_TIME_LIMIT_S",
            "training.time_budget_s",
            "a job is stopped with error time_limit once it runs this long",
        )
