"""sequence_tagging: a tag per token (CoNLL-style files), judged by validation accuracy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.tasks.base import MAX_VOCAB, Metric, Purpose, Role, StrictModel, TaskDefinition
from compress.tasks.text_common import text_adapter, text_onnx_inputs, text_tokens, validate_tagging_conll

TYPICAL_SENTENCE = 25  # tokens: the estimate's sequence length (sentences vary)


class SequenceTaggingTask(StrictModel):
    """Token tagging on CoNLL-style files: ``token<TAB>tag`` lines, a blank line between sentences."""

    type: Literal["sequence_tagging"] = "sequence_tagging"
    max_vocab: int | None = Field(None, ge=2, le=MAX_VOCAB, description="vocabulary cap; rarer words become <unk>")


def _adapter(recipe, data, device):
    from compress.problems.text import TaggingAdapter

    return text_adapter(
        TaggingAdapter,
        recipe,
        data,
        max_vocab=recipe.task.max_vocab,
        seed=recipe.training.seed,
        device=device,
        with_tags=True,
    )


def _model(recipe, sizes):
    from compress.models import SequenceTagger

    return SequenceTagger(
        recipe.model, recipe.method, sizes["vocab_size"], sizes["num_tags"], reordered=bool(sizes.get("reordered", 0))
    )


def _sample_inputs(model, batch, steps, generator):
    import torch

    return text_tokens(model, batch, steps, generator), torch.full((batch,), steps)


TASK = TaskDefinition(
    type="sequence_tagging",
    spec=SequenceTaggingTask,
    description=SequenceTaggingTask.__doc__,
    metric=Metric("valid_accuracy", lower_is_better=False, description="token accuracy on the validation file"),
    roles={
        "train": Role("tagging_conll", required=True, description="tagged training sentences"),
        "valid": Role("tagging_conll", description="tagged validation sentences (else 10% of train is held out)"),
        "vocabulary": Role("vocabulary", description="the token order an init_from model's rows follow"),
    },
    purposes=(Purpose("tagging_conll", validate_tagging_conll, "token<TAB>tag lines, blank line between sentences"),),
    build_adapter=_adapter,
    build_model=_model,
    sequence_length=lambda recipe: TYPICAL_SENTENCE,
    text=True,
    data_sizes=("vocab_size", "num_tags"),
    onnx_inputs=lambda model, manifest: text_onnx_inputs(model, "tag_logits"),
    sample_inputs=_sample_inputs,
)
