""" "Learning to recite" (Demeester et al., "Predefined Sparseness in Recurrent Sequence Models", CoNLL 2018): at a
fixed parameter budget, does a wider predefined-sparse LSTM language model memorise its training text faster than a
dense one of equal size?

The paper trains AWD-LSTM-sized models with no regularisation on all of PTB at a budget of 7.07M parameters (dense
reduced 200-575-575-200 against sparse models with larger hidden states) and reports that the sparse ones memorise
faster; it gives curves, not a number. Here, at a scale this CPU finishes, through compress.run:

  predefined-H   2-layer LSTM, hidden H (default 384), recurrent layers planned by the library for the recurrent
                 parameter count of a dense model H / 1.5 wide (method.recurrent.budget_of.hidden_scale 1.5)
  dense-h        2-layer dense LSTM whose hidden size h gives the same TOTAL parameter count as predefined-H (the
                 decoder is hidden x V, so h is above H / 1.5: the dense model gets the sparse model's extra decoder
                 parameters back in its recurrent layers); h is searched, and both counts are printed

Both: embedding 128 (untied), no dropout, no weight decay, Adam lr 2e-3, clip 0.25, batch 20, bptt 35. The training
text is the first --tokens tokens of PTB train (the `treebank` package); it is also given as the validation file, so
the task's metric after each epoch (eval mode, the whole text) IS the training perplexity: the table is training
perplexity against epochs, mean ± sample std over seeds, and a PNG plot.

    python benchmarks/predefined_recite.py [--seeds 0,1] [--tokens 10000] [--epochs 40] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import compress
from compress.pipeline import build_model
from compress.spec import Recipe

PAPER = (
    "learning to recite (no regularisation, 7.07M parameters, PTB): sparse models with larger hidden states memorise "
    "faster than dense_reduced 200-575-575-200 (curves only, no published number)"
)


def ptb_slice(directory: Path, tokens: int) -> tuple[Path, int]:
    """The first whole lines of PTB train holding at least ``tokens`` tokens (with <eos>)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        import treebank
    lines, count = [], 0
    for line in treebank.penn["train"].splitlines():
        if count >= tokens:
            break
        lines.append(line)
        count += len(line.split()) + 1
    path = directory / "recite.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, count


def recipe(args, hidden: int, method: dict, seed: int) -> Recipe:
    return Recipe.model_validate(
        {
            "task": {"type": "language_model", "max_vocab": 10_000},
            "model": {"cell": "lstm", "embedding_size": args.embedding, "hidden_size": hidden, "num_layers": 2},
            "method": method,
            "training": {
                "epochs": args.epochs,
                "batch_size": 20,
                "bptt": 35,
                "optimizer": "adam",
                "lr": args.lr,
                "clip": 0.25,
                "seed": seed,
                "evaluations": args.epochs,
            },
            "reference": "none",
            "output": {"measure_speed": False},
        }
    )


def count(spec: Recipe, vocab_size: int) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(spec, {"vocab_size": vocab_size}).parameters())


def matched_dense(args, target: int, vocab_size: int) -> tuple[int, int]:
    """The dense hidden size whose total parameter count is closest to ``target``."""
    best = None
    for hidden in range(8, 2 * args.hidden):
        n = count(recipe(args, hidden, {"type": "dense"}, 0), vocab_size)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (hidden, n)
    return best


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--tokens", type=int, default=10_000, help="length of the PTB slice to memorise")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=384, help="hidden size of the predefined-sparse model")
    parser.add_argument("--scale", type=float, default=1.5, help="budget_of.hidden_scale of the sparse model")
    parser.add_argument("--embedding", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", default="benchmarks/results/predefined_recite_cpu.png")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 2k tokens, 3 epochs, one seed")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.epochs, args.seeds = 2000, 3, args.seeds.split(",")[0]
        args.plot = str(Path(tempfile.gettempdir()) / "predefined_recite_quick.png")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as directory:
        text, tokens = ptb_slice(Path(directory), args.tokens)
        vocab_size = len({t for line in text.read_text().splitlines() for t in line.split()} | {"<eos>", "<unk>"})
        sparse_method = {"type": "predefined", "recurrent": {"budget_of": {"hidden_scale": args.scale}}}
        sparse_total = count(recipe(args, args.hidden, sparse_method, 0), vocab_size)
        dense_hidden, dense_total = matched_dense(args, sparse_total, vocab_size)
        names = {f"dense-{dense_hidden}": (dense_hidden, {"type": "dense"}), f"predefined-{args.hidden}": None}
        names[f"predefined-{args.hidden}"] = (args.hidden, sparse_method)
        print(
            f"torch {torch.__version__}, cpu, {args.threads} thread(s); seeds {seeds}; PTB train first {tokens:,} "
            f"tokens (vocabulary {vocab_size:,}); {args.epochs} epochs; 2-layer LSTM, embedding {args.embedding}, "
            f"no dropout, Adam {args.lr:g}, clip 0.25, batch 20, bptt 35",
            flush=True,
        )
        curves: dict[str, list[list[float]]] = {name: [] for name in names}
        info: dict[str, dict] = {}
        for seed in seeds:
            for name, (hidden, method) in names.items():
                spec = recipe(args, hidden, method, seed)
                started = time.perf_counter()
                data = {"train": text, "valid": text}
                result = compress.run(spec, data, output_dir=Path(directory) / f"{name}-{seed}", device="cpu")
                seconds = time.perf_counter() - started
                if result.model.embedding.num_embeddings != vocab_size:
                    raise SystemExit(f"vocabulary {result.model.embedding.num_embeddings} != counted {vocab_size}")
                curve = [h["valid_perplexity"] for h in result.history if h["epoch_end"]]
                curves[name].append(curve)
                rnn = result.model.rnn
                info[name] = {
                    "total": sum(p.numel() for p in result.model.parameters()),
                    "recurrent": sum(p.numel() for p in rnn.parameters()),
                    "components": getattr(rnn, "components", None),
                    "densities": [round(lay.windows[0][1] / lay.input_size, 3) for lay in getattr(rnn, "layouts", [])],
                    "seconds": [*info.get(name, {}).get("seconds", []), seconds],
                    "steps": result.history[-1]["step"],
                }
                print(
                    f"  seed {seed} {name:<16} final train ppl {curve[-1]:8.2f}  {seconds:6.0f} s "
                    f"({1000 * seconds / info[name]['steps']:.0f} ms/step incl. evaluation)",
                    flush=True,
                )

    print()
    for name, row in info.items():
        print(
            f"{name:<16} total {row['total']:>10,}  recurrent {row['recurrent']:>9,}  components "
            f"{row['components'] or '-'}  input density {row['densities'] or '-'}"
        )
    print(f"total parameters: sparse - dense = {sparse_total - dense_total:+,} ({sparse_total / dense_total - 1:+.2%})")
    print("\ntraining perplexity (the whole slice, eval mode) after each epoch, mean ± sample std over seeds")
    header = f"{'epoch':>5}" + "".join(f"{name:>24}" for name in names) + f"{'sparse/dense':>14}"
    print(header)
    dense_name, sparse_name = list(names)
    means = {name: [] for name in names}
    for epoch in range(args.epochs):
        cells = ""
        for name in names:
            m, s = mean_std([c[epoch] for c in curves[name]])
            means[name].append(m)
            cells += f"{m:>14.2f} ± {s:<7.2f}"
        print(f"{epoch + 1:>5}{cells}{means[sparse_name][-1] / means[dense_name][-1]:>14.3f}")

    # Epochs to reach a few training-perplexity levels: "memorise faster" read as fewer epochs to a level.
    def first_epoch(curve: list[float], level: float) -> int | None:
        return next((e + 1 for e, p in enumerate(curve) if p <= level), None)

    print(f"\n{'epochs to reach training ppl':<30}" + "".join(f"{name:>22}" for name in names))
    for level in (100, 20, 5, 2):
        cells = ""
        for name in names:
            reached = [first_epoch(c, level) for c in curves[name]]
            cells += f"{reached!s:>22}"
        print(f"{'<= ' + str(level):<30}{cells}")
    print(f"paper: {PAPER}")

    final_dense = [c[-1] for c in curves[dense_name]]
    final_sparse = [c[-1] for c in curves[sparse_name]]
    half = args.epochs // 2
    for label, epoch in ((f"epoch {half}", half - 1), (f"epoch {args.epochs} (last)", args.epochs - 1)):
        d = mean_std([c[epoch] for c in curves[dense_name]])
        s = mean_std([c[epoch] for c in curves[sparse_name]])
        log_gap = math.log(d[0]) - math.log(s[0])
        # the spread of log perplexity over seeds, the larger of the two models'
        spread = max(
            (statistics.stdev([math.log(c[epoch]) for c in curves[n]]) if len(seeds) > 1 else float("nan"))
            for n in names
        )
        held = "HELD" if s[0] < d[0] else "NOT HELD"
        beyond = (
            "cannot be compared with (one seed)"
            if math.isnan(spread)
            else ("exceeds" if abs(log_gap) > spread else "does not exceed")
        )
        print(
            f"verdict at {label}: wider sparse memorises faster than equal-size dense: {held} ({sparse_name} "
            f"{s[0]:.2f} vs {dense_name} {d[0]:.2f} training ppl; log-ppl gap {log_gap:+.3f} {beyond} the seed "
            f"spread {spread:.3f})"
        )
    del final_dense, final_sparse

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=110)
    epochs = list(range(1, args.epochs + 1))
    for name, colour in zip(names, ("tab:blue", "tab:red"), strict=True):
        for curve in curves[name]:
            axis.plot(epochs, curve, color=colour, alpha=0.25, linewidth=0.8)
        label = f"{name} ({info[name]['total'] / 1e6:.2f}M params)"
        axis.plot(epochs, means[name], color=colour, linewidth=2, label=label)
    axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.set_ylabel("training perplexity (log scale)")
    axis.set_title(f"Learning to recite: PTB first {tokens:,} tokens, {len(seeds)} seed(s), mean and each seed")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
