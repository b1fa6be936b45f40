"""What the two text tasks share: building their adapter with the job's vocabulary, and their ONNX inputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compress.data import validate_lm_text, validate_tagging_conll

__all__ = ["require", "text_adapter", "text_onnx_inputs", "text_tokens", "validate_lm_text", "validate_tagging_conll"]


def require(data: Mapping[str, Any], key: str, task: str) -> Path:
    if key not in data or data[key] is None:
        raise ValueError(f"the {task} task needs a '{key}' data file")
    return Path(data[key])


def text_adapter(cls, recipe, data: Mapping[str, Any], *, with_tags: bool = False, **options):
    """``cls`` over the job's train/valid files, with the vocabulary (and tags) the user gave, if any."""
    from compress.weights import vocabulary_of

    vocabulary, tags = vocabulary_of(data)
    if recipe.init_from and vocabulary is None:
        raise ValueError(
            "init_from: the weights' embedding and decoder rows follow a vocabulary the job does not have: upload "
            "it as a 'vocabulary' file (one token a line, in id order) or store it in the weights' metadata"
        )
    if with_tags:  # the tagger's adapter also keeps the tag order it was given
        options["tags"] = tags
    return cls(
        require(data, "train", recipe.task.type),
        data.get("valid"),
        batch_size=recipe.training.batch_size,
        vocabulary=vocabulary,
        **options,
    )


def text_onnx_inputs(model, output: str):
    import torch

    from compress.export import LanguageModelLogits, TaggerLogits

    wrapper = LanguageModelLogits(model) if output == "logits" else TaggerLogits(model)
    axes = {"tokens": {0: "steps", 1: "batch"}, output: {0: "steps", 1: "batch"}}
    return wrapper, (torch.zeros(5, 2, dtype=torch.long),), ["tokens"], output, axes


def text_tokens(model, batch: int, steps: int, generator):
    """Random token ids (steps, batch) below the model's vocabulary size."""
    import torch

    return torch.randint(0, model.embedding.num_embeddings, (steps, batch), generator=generator)
