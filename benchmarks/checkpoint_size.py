"""Checkpoint file size against sparsity, the dense file and the information bound.

The model is the paper's language-model shape: a 3-layer tanh RNN with 650 hidden units, 650-d embeddings and an
untied decoder over PTB's 10,000 words (random weights: sizes depend on the sparsity pattern, not on training).
All weight matrices are pruned together by global magnitude (compress.pruning), biases stay dense, as in the paper.

    python benchmarks/checkpoint_size.py [--vocab 10000 --hidden 650 --layers 3]

Targets (issue: sparse checkpoint): at >= 90% sparsity, within 1.25x of the information bound; under 15% of the dense
file at 90% and under 5% at 98%. Issue 13: with float16 values, 98% sparsity at most 1.5% of the float32 dense file.
The float16/bfloat16 rows give the largest relative change of a kept value. Prints PASS/MISS; never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from compress.checkpoint import information_bound_bytes, load_tensors, save_tensors
from compress.pruning import global_magnitude_masks

SPARSITIES = (0.0, 0.5, 0.9, 0.95, 0.98, 0.99)


class RNNLanguageModel(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, hidden)
        self.rnn = nn.RNN(hidden, hidden, layers, nonlinearity="tanh")
        self.decoder = nn.Linear(hidden, vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--hidden", type=int, default=650)
    parser.add_argument("--layers", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = RNNLanguageModel(args.vocab, args.hidden, args.layers)
    state = {name: p.detach() for name, p in model.named_parameters()}
    prunable = {name: t for name, t in state.items() if t.dim() == 2}
    total = sum(t.numel() for t in state.values())
    print(
        f"RNN LM {args.vocab} words, {args.layers}x{args.hidden} tanh, {total:,} parameters "
        f"({sum(t.numel() for t in prunable.values()):,} prunable)\n"
    )
    header = f"{'sparsity':>9}{'file bytes':>14}{'dense file':>14}{'bound':>14}{'/bound':>8}{'/dense':>8}  encodings"
    print(header)
    print("-" * len(header))
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        dense_path = Path(directory) / "dense.safetensors"
        save_tensors(dense_path, state, encodings=dict.fromkeys(state, "dense"))
        dense_bytes = dense_path.stat().st_size
        for sparsity in SPARSITIES:
            masks = global_magnitude_masks(prunable, sparsity) if sparsity else {}
            tensors = {name: t * masks[name] if name in masks else t for name, t in state.items()}
            path = Path(directory) / f"s{sparsity}.safetensors"
            manifest = save_tensors(path, tensors)
            size = path.stat().st_size
            bound = sum(
                information_bound_bytes(t.numel(), int((t != 0).sum()), t.element_size()) for t in tensors.values()
            )
            used = sorted({record["encoding"] for record in manifest["tensors"].values()})
            results[sparsity] = (size, bound)
            print(
                f"{sparsity:>9.0%}{size:>14,}{dense_bytes:>14,}{bound:>14,.0f}{size / bound:>8.3f}"
                f"{size / dense_bytes:>8.1%}  {','.join(used)}"
            )
        print(f"\n{'sparsity':>9}{'values':>10}{'file bytes':>14}{'/dense f32':>12}{'max rel. change':>17}")
        smaller = {}
        for sparsity in (0.9, 0.98):
            masks = global_magnitude_masks(prunable, sparsity)
            tensors = {name: t * masks[name] if name in masks else t for name, t in state.items()}
            for dtype in ("float16", "bfloat16"):
                path = Path(directory) / f"s{sparsity}_{dtype}.safetensors"
                save_tensors(path, tensors, value_dtype=dtype)
                loaded, _ = load_tensors(path)
                change = max(
                    float(((loaded[n] - t).abs() / t.abs())[t != 0].max()) for n, t in tensors.items() if (t != 0).any()
                )
                smaller[(sparsity, dtype)] = path.stat().st_size
                fraction = path.stat().st_size / dense_bytes
                print(f"{sparsity:>9.0%}{dtype:>10}{path.stat().st_size:>14,}{fraction:>12.2%}{change:>17.2e}")
    print("\nTargets:")
    for sparsity in (s for s in SPARSITIES if s >= 0.9):
        size, bound = results[sparsity]
        print(
            f"  {sparsity:.0%}: file/bound = {size / bound:.3f} <= 1.25  {'PASS' if size / bound <= 1.25 else 'MISS'}"
        )
    for sparsity, limit in ((0.9, 0.15), (0.98, 0.05)):
        fraction = results[sparsity][0] / dense_bytes
        verdict = "PASS" if fraction < limit else "MISS"
        print(f"  {sparsity:.0%}: file/dense = {fraction:.1%} < {limit:.0%}  {verdict}")
    fraction = smaller[(0.98, "float16")] / dense_bytes
    verdict = "PASS" if fraction <= 0.015 else "MISS"
    print(f"  98% with float16 values: file/dense float32 = {fraction:.2%} <= 1.5%  {verdict}")


if __name__ == "__main__":
    main()
