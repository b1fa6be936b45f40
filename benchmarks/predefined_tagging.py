"""Predefined-sparse word embeddings on tagging (Demeester et al., "Predefined Sparseness in Recurrent Sequence Models",
CoNLL 2018: embeddings, the seed experiment) at a scale this CPU finishes.

No POS-tagged corpus ships here, so the script writes one (``generate_corpus``, deterministic by seed): word
frequencies follow a Zipf law over a few thousand word types; every word has a latent class (its "part of speech");
a class admits one to three tags, and which of them a token gets is decided by the classes of its left and right
neighbours (sentence edges are a class of their own); a small share of tags is replaced at random (noise the model
cannot learn). So the tag of a word depends on what the embedding knows of the word AND of its neighbours.

Models, all through compress.run with recipes a user could submit (task sequence_tagging, BiLSTM 10+10,
Linear(2h -> h) + tanh, tag softmax, Adam lr 1e-3, batch 20; the paper trains 50 epochs):

  dense-5             dense 5-d embeddings
  sparse-20 (order)   20-d embeddings, B = 20 blocks, density 0.25 (5 trainable entries a word on average), the
                      vocabulary-order ablation of the paper: frequent_long (the paper's), rare_long, random
  dense-20            (--dense-20) dense 20-d embeddings, 4x the embedding parameters: an upper reference

Accuracy is token accuracy on the generated test split (the task's metric, the tagger's own evaluation, computed on the
test file); the validation accuracy that compress.run reports is printed too.

    python benchmarks/predefined_tagging.py [--seeds 0,1] [--epochs 50] [--threads 1] [--dense-20] [--quick]
    python benchmarks/predefined_tagging.py --combine LOG [LOG ...]   # the table from runs split over processes
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

import compress
from compress.spec import Recipe

PAPER = "sparse 20-D (B=20, density 0.25) beats dense 5-D at equal parameters (POS tagging, PTB WSJ; no figure given)"


# -- data -------------------------------------------------------------------------------------------------------------


def generate_corpus(
    directory: Path,
    *,
    seed: int = 0,
    vocab: int = 4000,
    classes: int = 16,
    num_tags: int = 24,
    zipf: float = 1.0,
    sentences: tuple[int, int, int] = (2000, 300, 600),
    length: tuple[int, int] = (8, 30),
    noise: float = 0.03,
) -> dict[str, Path]:
    """Write train/valid/test CoNLL files (``token<TAB>tag``, blank line between sentences); return their paths.

    Word of rank r (1-based) is drawn with probability proportional to r^-zipf. Word -> class is uniform at random.
    Class c admits 1-3 tags (candidates[c]); the tag of a token of class c with neighbour classes (left, right) is
    candidates[c][choice[c][left][right]], a fixed random choice per (c, left, right) (edges are class ``classes``).
    With probability ``noise`` the tag is replaced by a uniformly random one.
    """
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    weights = [(r + 1) ** -zipf for r in range(vocab)]
    word_class = [rng.randrange(classes) for _ in range(vocab)]
    candidates = [rng.sample(range(num_tags), rng.choice((1, 2, 2, 3))) for _ in range(classes)]
    choice = [
        [[rng.randrange(len(candidates[c])) for _ in range(classes + 1)] for _ in range(classes + 1)]
        for c in range(classes)
    ]
    paths = {}
    for name, count in zip(("train", "valid", "test"), sentences, strict=True):
        lines = []
        for _ in range(count):
            ids = rng.choices(range(vocab), weights, k=rng.randint(*length))
            cls = [classes] + [word_class[i] for i in ids] + [classes]
            for position, word in enumerate(ids):
                c = cls[position + 1]
                tag = candidates[c][choice[c][cls[position]][cls[position + 2]]]
                if rng.random() < noise:
                    tag = rng.randrange(num_tags)
                lines.append(f"{words[word]}\tT{tag}")
            lines.append("")
        path = directory / f"{name}.conll"
        path.write_text("\n".join(lines) + "\n")
        paths[name] = path
    return paths


def corpus_stats(paths: dict[str, Path]) -> dict[str, float]:
    counts: dict[str, int] = {}
    for line in paths["train"].read_text().splitlines():
        if line:
            counts[line.split("\t")[0]] = counts.get(line.split("\t")[0], 0) + 1
    test_tokens = [line.split("\t")[0] for line in paths["test"].read_text().splitlines() if line]
    return {
        "train_tokens": sum(counts.values()),
        "types": len(counts),
        "singletons": sum(1 for c in counts.values() if c == 1),
        "kept": sum(1 for c in counts.values() if c >= 2),
        "test_tokens": len(test_tokens),
        "test_oov": sum(1 for t in test_tokens if counts.get(t, 0) < 2) / len(test_tokens),
    }


# -- recipes ----------------------------------------------------------------------------------------------------------


def recipe(args, embedding_size: int, method: dict, seed: int, max_vocab: int) -> Recipe:
    return Recipe.model_validate(
        {
            "task": {"type": "sequence_tagging", "max_vocab": max_vocab},
            "model": {
                "cell": "lstm",
                "embedding_size": embedding_size,
                "hidden_size": args.hidden,
                "num_layers": 1,
                "bidirectional": True,
            },
            "method": method,
            "training": {
                "epochs": args.epochs,
                "batch_size": 20,
                "optimizer": "adam",
                "lr": 1e-3,
                "clip": None,
                "seed": seed,
                "evaluations": args.epochs,
            },
            "reference": "none",
            "output": {"measure_speed": False},
        }
    )


def models(args, max_vocab: int, seed: int) -> dict[str, Recipe]:
    def sparse(order: str) -> dict:
        return {"type": "predefined", "embedding": {"blocks": 20, "density": 0.25, "order": order}}

    chosen = {
        "dense-5": recipe(args, 5, {"type": "dense"}, seed, max_vocab),
        "sparse-20 frequent_long": recipe(args, 20, sparse("frequent_long"), seed, max_vocab),
        "sparse-20 rare_long": recipe(args, 20, sparse("rare_long"), seed, max_vocab),
        "sparse-20 random": recipe(args, 20, sparse("random"), seed, max_vocab),
    }
    if args.dense_20:
        chosen["dense-20"] = recipe(args, 20, {"type": "dense"}, seed, max_vocab)
    if args.only:
        chosen = {name: spec for name, spec in chosen.items() if name in args.only.split(",")}
    return chosen


@torch.no_grad()
def test_accuracy(model, paths: dict[str, Path], max_vocab: int) -> float:
    """The tagger's own evaluation (TaggingAdapter.evaluate) on the test file, with the run's vocabulary and tags:
    both are rebuilt from the same training file, so the ids agree with the ones the model was trained on."""
    from compress.problems.text import TaggingAdapter

    adapter = TaggingAdapter(paths["train"], paths["test"], max_vocab=max_vocab, batch_size=20, device="cpu")
    return adapter.evaluate(model)["valid_accuracy"]


RUN_LINE = re.compile(r"^  seed (\d+) (.+?)\s+test ([\d.]+) valid ([\d.]+)\s+([\d.]+) s")


def combine(args, logs: list[str], paths: dict[str, Path], max_vocab: int) -> tuple[dict[str, dict], list[int]]:
    """Rows from the per-run lines of earlier stdout logs; parameter counts from the same recipes, rebuilt."""
    from compress.pipeline import build_model
    from compress.problems.text import TaggingAdapter

    adapter = TaggingAdapter(paths["train"], paths["valid"], max_vocab=max_vocab, batch_size=20)
    sizes = {"vocab_size": len(adapter.vocab), "num_tags": adapter.num_tags}
    rows: dict[str, dict] = {}
    seeds: set[int] = set()
    for log in logs:
        for line in Path(log).read_text().splitlines():
            found = RUN_LINE.match(line)
            if not found:
                continue
            seed, name = int(found.group(1)), found.group(2).strip()
            seeds.add(seed)
            spec = models(args, max_vocab, seed)[name]
            row = rows.setdefault(name, {"test": [], "valid": [], "seconds": [], "recipe": spec})
            row["test"].append(float(found.group(3)))
            row["valid"].append(float(found.group(4)))
            row["seconds"].append(float(found.group(5)))
            model = build_model(spec, sizes)
            row["embedding"] = sum(p.numel() for p in model.embedding.parameters())
            row["total"] = sum(p.numel() for p in model.parameters())
    return rows, sorted(seeds)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def report(rows: dict[str, dict], seeds: list[int]) -> None:
    """The table (mean ± sample std over seeds) and the verdicts."""
    print("\nmethod of sparse-20 frequent_long:", rows["sparse-20 frequent_long"]["recipe"].method.model_dump_json())
    print(
        f"\n{'model':<26}{'embedding params':>17}{'total params':>14}{'test accuracy':>22}{'valid accuracy':>22}"
        f"{'s/run':>8}"
    )
    for name, row in rows.items():
        test, valid = mean_std(row["test"]), mean_std(row["valid"])
        print(
            f"{name:<26}{row['embedding']:>17,}{row['total']:>14,}{test[0]:>13.4f} ± {test[1]:.4f}"
            f"{valid[0]:>13.4f} ± {valid[1]:.4f}{statistics.fmean(row['seconds']):>8.0f}"
        )
    dense, sparse = rows["dense-5"], rows["sparse-20 frequent_long"]
    print(
        f"\nparameters: embeddings {sparse['embedding']:,} (sparse-20) vs {dense['embedding']:,} (dense-5), "
        f"difference {sparse['embedding'] - dense['embedding']:+,}; whole model {sparse['total'] - dense['total']:+,} "
        "(the BiLSTM reads 20 inputs instead of 5: W_ih is 4x wider)"
    )
    print(f"paper: {PAPER}")

    def verdict(better: str, worse: str, claim: str) -> None:
        if better not in rows or worse not in rows:
            print(f"verdict: {claim}: no result (a run is missing)")
            return
        a, b = mean_std(rows[better]["test"]), mean_std(rows[worse]["test"])
        gap = a[0] - b[0]
        spread = max(a[1], b[1]) if len(seeds) > 1 else float("nan")
        held = "HELD" if gap > 0 else "NOT HELD"
        beyond = "exceeds" if abs(gap) > spread else "does not exceed"
        if math.isnan(spread):
            beyond = "cannot be compared with (one seed)"
        print(
            f"verdict: {claim}: {held} ({better} {a[0]:.4f} vs {worse} {b[0]:.4f}, gap {gap:+.4f}; the gap {beyond} "
            f"the seed spread {spread:.4f}, the larger sample std of the two)"
        )

    verdict("sparse-20 frequent_long", "dense-5", "sparse 20-D beats dense 5-D at equal embedding parameters")
    verdict("sparse-20 frequent_long", "sparse-20 rare_long", "frequent words long beats rare words long")
    verdict("sparse-20 frequent_long", "sparse-20 random", "frequent words long beats a random order")
    print(
        "(random order: the permutation is SparseEmbedding's default seed 0 for every training seed; "
        f"{len(seeds)} seeds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1", help="training seeds, comma separated")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated corpus")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=10, help="LSTM units per direction")
    parser.add_argument("--vocab", type=int, default=4000, help="word types of the generator")
    parser.add_argument("--train-sentences", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dense-20", action="store_true", help="also train the dense 20-d upper reference")
    parser.add_argument("--only", help="train only these models (comma separated names, e.g. 'sparse-20 random')")
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="LOG",
        help="train nothing: the table from the per-run lines of earlier runs' stdout (runs split over processes)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 2 epochs, 200 sentences, one seed")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train_sentences, args.seeds = 2, 200, args.seeds.split(",")[0]
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    counts = (args.train_sentences, max(50, args.train_sentences // 6), max(100, args.train_sentences * 3 // 10))

    with tempfile.TemporaryDirectory() as directory:
        paths = generate_corpus(Path(directory), seed=args.data_seed, vocab=args.vocab, sentences=counts)
        stats = corpus_stats(paths)
        max_vocab = stats["kept"] + 1  # words seen once become <unk>, so <unk> is trained (test OOV maps to it)
        print(
            f"torch {torch.__version__}, cpu, {args.threads} thread(s); seeds {seeds}; epochs {args.epochs}; "
            f"BiLSTM {args.hidden}+{args.hidden}, Adam 1e-3, batch 20\n"
            f"corpus (data seed {args.data_seed}): Zipf s=1.0 over {args.vocab} types, 16 latent classes, 24 tags, "
            f"noise 3%; sentences train/valid/test {counts}; train {stats['train_tokens']:,} tokens, "
            f"{stats['types']} types ({stats['singletons']} singletons -> <unk>), vocabulary {max_vocab}; "
            f"test {stats['test_tokens']:,} tokens, {stats['test_oov']:.1%} out of vocabulary",
            flush=True,
        )
        rows: dict[str, dict] = {}
        if args.combine:
            rows, seeds = combine(args, args.combine, paths, max_vocab)
            print(f"combined from {args.combine}: seeds {seeds}")
        for seed in seeds if not args.combine else []:
            for name, spec in models(args, max_vocab, seed).items():
                started = time.perf_counter()
                result = compress.run(
                    spec,
                    {"train": paths["train"], "valid": paths["valid"]},
                    output_dir=Path(directory) / f"{name}-{seed}",
                    device="cpu",
                )
                seconds = time.perf_counter() - started
                row = rows.setdefault(name, {"test": [], "valid": [], "seconds": [], "recipe": spec})
                row["test"].append(test_accuracy(result.model, paths, max_vocab))
                row["valid"].append(result.metrics["valid_accuracy"])
                row["seconds"].append(seconds)
                model = result.model
                row["embedding"] = sum(p.numel() for p in model.embedding.parameters())
                row["total"] = sum(p.numel() for p in model.parameters())
                steps = args.epochs * math.ceil(counts[0] / 20)
                print(
                    f"  seed {seed} {name:<24} test {row['test'][-1]:.4f} valid {row['valid'][-1]:.4f} "
                    f"{seconds:6.1f} s ({1000 * seconds / steps:.1f} ms/step incl. evaluation)",
                    flush=True,
                )
    report(rows, seeds)


if __name__ == "__main__":
    main()
