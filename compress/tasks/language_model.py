"""language_model: next-word prediction on plain text (PTB's format), judged by validation perplexity."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.tasks.base import MAX_VOCAB, Metric, Purpose, RecipeError, Role, StrictModel, TaskDefinition
from compress.tasks.text_common import text_adapter, text_onnx_inputs, text_tokens, validate_lm_text


class LanguageModelTask(StrictModel):
    """Next-word prediction on plain text: whitespace tokens, one sentence a line (the PTB format)."""

    type: Literal["language_model"] = "language_model"
    max_vocab: int = Field(10_000, ge=2, le=MAX_VOCAB, description="vocabulary cap; rarer words become <unk>")


def _adapter(recipe, data, device):
    from compress.problems.text import LanguageModelAdapter

    return text_adapter(
        LanguageModelAdapter, recipe, data, max_vocab=recipe.task.max_vocab, bptt=recipe.training.bptt, device=device
    )


def _model(recipe, sizes):
    from compress.models import LanguageModel

    return LanguageModel(recipe.model, recipe.method, sizes["vocab_size"], reordered=bool(sizes.get("reordered", 0)))


def _check(recipe) -> None:
    if recipe.model.bidirectional:
        raise RecipeError(
            "model.bidirectional",
            "model.bidirectional must be false: a language model cannot be bidirectional (it would see the words "
            "it must predict)",
        )


TASK = TaskDefinition(
    type="language_model",
    spec=LanguageModelTask,
    description=LanguageModelTask.__doc__,
    metric=Metric("valid_perplexity", lower_is_better=True, description="perplexity on the validation text"),
    roles={
        "train": Role("lm_text", required=True, description="training text"),
        "valid": Role("lm_text", description="validation text (else the last 10% of train is held out)"),
        "vocabulary": Role("vocabulary", description="the token order an init_from model's rows follow"),
    },
    purposes=(Purpose("lm_text", validate_lm_text, "plain text, one sentence a line"),),
    build_adapter=_adapter,
    build_model=_model,
    sequence_length=lambda recipe: recipe.training.bptt,
    text=True,
    data_sizes=("vocab_size",),
    output_width=lambda recipe, sizes: sizes["vocab_size"],
    check=_check,
    onnx_inputs=lambda model, manifest: text_onnx_inputs(model, "logits"),
    sample_inputs=lambda model, batch, steps, generator: (text_tokens(model, batch, steps, generator),),
    can_tie_weights=True,
)
