"""Does each method's default recipe hand back a model a user can trust? Every case through ``compress.run``, judged
by the job's own verdict against its own reference, at CPU scale.

Cases (each a recipe a user could submit; the same seed everywhere):
- navigation, ``moduli_pruning`` to 90% (torus, DoG, strength 0.1), ReLU RNN at 128 and 256 units, 256 place cells,
  against the dense reference;
- a small PTB language model (LSTM 64/128 on a PTB slice): ``magnitude_pruning`` and ``moduli_pruning`` to 90%
  against the dense reference, ``predefined`` against the dense model of the same parameters;
- a user's model: a plain-torch LSTM LM trained here with its own vocabulary order (alphabetical, unlike sparseq's
  frequency order), saved as plain safetensors with the vocabulary in its metadata, then pruned from those weights
  to 50, 75 and 90% (``init_from``); its reference is its own perplexity.

Each pruning case runs under several allocations (``--allocations``): the paper's (``preset: paper``: one global
threshold, no floors), global with floors, uniform and ERK (both with floors) - the table the defaults were chosen
from. Columns: metric, reference, ratio, tensors pruned away, tensors held at their floor, achieved sparsity of the
pruned tensors and of the whole model.

Targets: 0 dead tensors with the defaults; navigation at 90% within 2x of the dense error; the user's LSTM within 1.1x
of its own perplexity at 50% and 2x at 90%.

    python benchmarks/default_quality.py                     # everything (~30 min on this 2-core CPU)
    python benchmarks/default_quality.py --cases user --allocations erk
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
from compress.spec import Recipe

ALLOCATIONS = {
    "paper": {"preset": "paper"},
    "global+floors": {"allocation": "global", "floors": True},
    "uniform": {"allocation": "uniform", "floors": True},
    "erk": {"allocation": "erk", "floors": True},
    # the schedule, with the default allocation: cubic (Zhu & Gupta) prunes fast while weights are redundant and slowly
    # near the target; "early" starts at once and leaves half the run to fine-tune (a trained model needs no warm-up)
    "uniform+cubic": {"allocation": "uniform", "floors": True, "schedule": "cubic"},
    "uniform+cubic+early": {
        "allocation": "uniform",
        "floors": True,
        "schedule": "cubic",
        "start_fraction": 0.0,
        "end_fraction": 0.5,
    },
}


def ptb_slice(directory: Path, train_tokens: int, valid_tokens: int) -> dict[str, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the treebank module has an invalid escape sequence
        import treebank
    paths = {}
    for split, budget in (("train", train_tokens), ("valid", valid_tokens)):
        lines, count = [], 0
        for line in treebank.penn[split].splitlines():
            if count >= budget:
                break
            if line.split():
                lines.append(line.strip())
                count += len(line.split())
        paths[split] = directory / f"ptb.{split}.txt"
        paths[split].write_text("\n".join(lines) + "\n")
    return paths


def navigation_recipe(hidden: int, allocation: dict, steps: int) -> dict:
    method = {"type": "moduli_pruning", "space": "torus", "inhibitor": "dog", "strength": 0.1, "target_sparsity": 0.9}
    return {
        "task": {"type": "navigation", "place_cells": 256, "steps_per_epoch": steps},
        "model": {"cell": "rnn_relu", "hidden_size": hidden},
        "method": method | allocation,
        "training": {"epochs": 1, "batch_size": 20, "lr": 1e-3, "optimizer": "adamw"},
    }


def lm_recipe(method: dict, epochs: int) -> dict:
    return {
        "task": {"type": "language_model", "max_vocab": 10_000},
        "model": {"cell": "lstm", "embedding_size": 64, "hidden_size": 128},
        "method": method,
        "training": {"epochs": epochs, "batch_size": 20, "bptt": 35, "lr": 3e-3, "clip": 0.5},
    }


class UserLM(nn.Module):
    """What a user brings: an ordinary PyTorch LSTM language model with sparseq's parameter names."""

    def __init__(self, vocab: int, embedding: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        self.rnn = nn.LSTM(embedding, hidden)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        output, state = self.rnn(self.embedding(tokens), state)
        return self.decoder(output), state


def columns(path: Path, vocab: dict[str, int], width: int) -> torch.Tensor:
    ids = [vocab.get(t, vocab["<unk>"]) for line in path.read_text().splitlines() for t in [*line.split(), "<eos>"]]
    rows = len(ids) // width
    return torch.tensor(ids[: rows * width]).view(width, rows).t().contiguous()


def train_user_model(data: dict[str, Path], directory: Path, epochs: int) -> Path:
    """A plain training loop, its own vocabulary (alphabetical), saved with the vocabulary in the metadata."""
    from safetensors.torch import save_file

    words = sorted({t for line in data["train"].read_text().splitlines() for t in [*line.split(), "<eos>", "<unk>"]})
    vocab = {w: i for i, w in enumerate(words)}
    train, bptt = columns(data["train"], vocab, 20), 35
    torch.manual_seed(0)
    model = UserLM(len(words), 64, 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        state = None
        for start in range(0, train.size(0) - 1, bptt):
            inputs, targets = train[start : start + bptt], train[start + 1 : start + 1 + bptt]
            inputs = inputs[: targets.size(0)]
            logits, state = model(inputs, state)
            state = tuple(s.detach() for s in state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, len(words)), targets.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
    path = directory / "user_lm.safetensors"
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"vocabulary": json.dumps(words)})
    return path


def run_case(name: str, recipe: dict, data: dict, directory: Path, rows: list[dict]) -> None:
    started = time.time()
    result = compress.run(Recipe.model_validate(recipe), data, output_dir=directory / name, device="cpu")
    verdict, report = result.verdict, result.report
    dead = [w["tensor"] for w in result.warnings if w["code"] == "tensor_pruned_away"]
    floor = [w["tensor"] for w in result.warnings if w["code"] == "tensor_at_floor"]
    kept = {r["name"]: r["nnz"] / r["numel"] for r in report["tensors"] if len(r["shape"]) >= 2}
    row = {
        "case": name,
        "metric": verdict["name"],
        "value": verdict["value"],
        "reference": verdict["reference"],
        "ratio": verdict["ratio"],
        "dead": dead,
        "at_floor": floor,
        "pruned_sparsity": (report.get("pruning") or {}).get("sparsity"),
        "sparsity": report["parameters"]["sparsity"],
        "kept": kept,
        "seconds": time.time() - started,
    }
    rows.append(row)
    ratio = f"{row['ratio']:.3f}" if row["ratio"] is not None else "-"
    pruned = f"{row['pruned_sparsity']:.3f}" if row["pruned_sparsity"] is not None else "-"
    print(
        f"{name:<34} {row['value']:>9.3f} {row['reference'] or math.nan:>9.3f} {ratio:>7} {len(dead):>5} "
        f"{len(floor):>6} {pruned:>8} {row['sparsity']:>8.3f}  kept: "
        + ", ".join(f"{n.split('.')[-1] if 'rnn' in n else n.split('.')[0]} {k:.3f}" for n, k in kept.items())
        + f"  ({row['seconds']:.0f}s)",
        flush=True,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cases = ["navigation", "lm", "user"]
    parser.add_argument("--cases", nargs="+", default=cases, choices=cases)
    parser.add_argument("--allocations", nargs="+", default=list(ALLOCATIONS), choices=list(ALLOCATIONS))
    parser.add_argument("--navigation-steps", type=int, default=1000)
    parser.add_argument("--lm-methods", nargs="+", default=["magnitude_pruning", "moduli_pruning"])
    parser.add_argument("--train-tokens", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=1, help="language-model epochs over the PTB slice")
    parser.add_argument("--navigation-allocations", nargs="+", choices=list(ALLOCATIONS), help="default: --allocations")
    parser.add_argument("--user-allocations", nargs="+", choices=list(ALLOCATIONS), help="default: --allocations")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write every row to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    print(f"{'case':<34} {'value':>9} {'ref':>9} {'ratio':>7} {'dead':>5} {'floor':>6} {'pruned':>8} {'model':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        if "lm" in args.cases or "user" in args.cases:
            data = ptb_slice(directory, args.train_tokens, args.train_tokens // 5)
        if "lm" in args.cases:
            for label in args.allocations:
                for kind in args.lm_methods:
                    method = {"type": kind, "target_sparsity": 0.9} | ALLOCATIONS[label]
                    run_case(f"ptb lm {kind} 90% {label}", lm_recipe(method, args.epochs), data, directory, rows)
            predefined = {"type": "predefined", "recurrent": {"budget_of": {"hidden_scale": 1.5}}}
            predefined["embedding"] = {"blocks": 8, "density": 0.5}
            run_case("ptb lm predefined", lm_recipe(predefined, args.epochs), data, directory, rows)
        if "user" in args.cases:
            weights = train_user_model(data, directory, args.epochs)
            for sparsity in (0.5, 0.75, 0.9):
                for label in args.user_allocations or args.allocations:
                    method = {"type": "magnitude_pruning", "target_sparsity": sparsity} | ALLOCATIONS[label]
                    recipe = lm_recipe(method, 1) | {"init_from": "user weights"}
                    recipe["training"] = recipe["training"] | {"lr": 1e-3}
                    run_case(
                        f"user lstm {sparsity:.0%} {label}",
                        recipe,
                        {**data, "init_from": weights},
                        directory,
                        rows,
                    )
        if "navigation" in args.cases:
            for hidden in (128, 256):
                for label in args.navigation_allocations or args.allocations:
                    recipe = navigation_recipe(hidden, ALLOCATIONS[label], args.navigation_steps)
                    run_case(f"navigation {hidden} moduli 90% {label}", recipe, {}, directory, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
