"""The seed's language-model comparison at a scale this CPU finishes in under 30 minutes.

PTB (the `treebank` package), a 2-layer LSTM language model with 200-d embeddings, three models trained with identical
settings through compress.run:

  dense             hidden 200
  predefined-sparse hidden 300, k and delta chosen by the planner for the parameter count of dense-200 (budget_of x1.5)
  dense full        hidden 300 (the sparse model's width, dense: ~1.6x the recurrent parameters)

Prints validation perplexity per epoch, parameters and wall time. Regime: short runs on a slice of the training text are
limited by training time, not model size, so the table is an equal-epoch
comparison of early training; the paper's gain (58.8 -> 57.9) is for converged AWD-LSTM runs, which need a GPU:
`--fraction 1 --epochs 40 --hidden 1150 --embedding 400 --layers 3` on one.

    python benchmarks/predefined_lm.py [--fraction 0.25] [--epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

import compress
from compress.spec import Recipe


def ptb_files(directory: Path, fraction: float) -> dict[str, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        import treebank
    lines = treebank.penn["train"].splitlines()
    train = directory / "train.txt"
    train.write_text("\n".join(lines[: int(len(lines) * fraction)]) + "\n")
    valid = directory / "valid.txt"
    valid.write_text(treebank.penn["valid"])
    return {"train": train, "valid": valid}


def recipe(args, hidden: int, method: dict) -> Recipe:
    return Recipe.model_validate(
        {
            "task": {"type": "language_model", "max_vocab": 10_000},
            "model": {
                "cell": "lstm",
                "embedding_size": args.embedding,
                "hidden_size": hidden,
                "num_layers": args.layers,
                "dropout": 0.2,
            },
            "method": method,
            "training": {
                "epochs": args.epochs,
                "batch_size": 20,
                "bptt": 35,
                "optimizer": "adam",
                "lr": 2e-3,
                "clip": 0.25,
                "seed": args.seed,
            },
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=0.25, help="share of the PTB training text")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=200, help="hidden size of the dense model")
    parser.add_argument("--embedding", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.5, help="sparse hidden = dense hidden x scale")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wide = round(args.hidden * args.scale)
    models = {
        f"dense-{args.hidden}": recipe(args, args.hidden, {"type": "dense"}),
        f"predefined-{wide}": recipe(
            args, wide, {"type": "predefined", "recurrent": {"budget_of": {"hidden_scale": args.scale}}}
        ),
        f"dense-{wide}": recipe(args, wide, {"type": "dense"}),
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"torch {torch.__version__}, {device}, {args.threads} threads; PTB {args.fraction:.0%} of train, "
        f"{args.epochs} epochs, {args.layers} layers, embedding {args.embedding}\n"
    )
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        data = ptb_files(Path(directory), args.fraction)
        for name, spec in models.items():
            started = time.perf_counter()
            result = compress.run(spec, data, output_dir=Path(directory) / name, device=device)
            seconds = time.perf_counter() - started
            recurrent = sum(p.numel() for p in result.model.rnn.parameters())
            total = sum(p.numel() for p in result.model.parameters())
            curve = [h["valid_perplexity"] for h in result.history]
            components = getattr(result.model.rnn, "components", None)
            rows.append((name, recurrent, total, curve, seconds, components))
            print(f"  {name}: done in {seconds:.0f} s", flush=True)
    print(
        f"\n{'model':<18}{'recurrent':>11}{'total':>11}  "
        + "".join(f"{'eval' + str(e + 1):>9}" for e in range(max(len(row[3]) for row in rows)))
        + f"{'time s':>9}{'time/dense':>11}  k per layer"
    )
    for name, recurrent, total, curve, seconds, components in rows:
        print(
            f"{name:<18}{recurrent:>11,}{total:>11,}  "
            + "".join(f"{p:>9.1f}" for p in curve)
            + f"{seconds:>9.0f}{seconds / rows[0][4]:>11.2f}  {components or '-'}"
        )
    print(
        "\nvalidation perplexity at each evaluation of the run, in order (training.evaluations spread over training, "
        "and each epoch's end; lower is better); equal epochs, early training (see the docstring)"
    )


if __name__ == "__main__":
    main()
