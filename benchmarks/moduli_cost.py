"""What the moduli regularizer costs per training step, next to the step itself.

For each model it times, side by side in one run: a full training step (forward, loss, backward, optimizer step)
without the regularizer, and the regularizer alone (penalty + its backward). Prints the ratio penalty / step.

    python benchmarks/moduli_cost.py              # navigation RNN at 256 and 1024 units, an LSTM LM layer
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.moduli import ModuliRegularizer
from compress.problems import NavigationConfig, NavigationProblem


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def navigation_case(hidden: int, batch: int, seq: int):
    task = NavigationProblem(NavigationConfig(hidden_size=hidden, batch_size=batch, sequence_length=seq), seed=0)
    model = task.model()
    velocity, start, targets, _ = task.batch()
    return model, lambda: task.loss(model(velocity, start), targets), f"navigation RNN N={hidden} b={batch} T={seq}"


def lstm_case(hidden: int, batch: int, seq: int):
    class LanguageModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(10_000, hidden)
            self.lstm = nn.LSTM(hidden, hidden)
            self.decoder = nn.Linear(hidden, 10_000)

    model = LanguageModel()
    tokens = torch.randint(0, 10_000, (seq, batch))

    def loss():
        out, _ = model.lstm(model.embedding(tokens))
        return nn.functional.cross_entropy(model.decoder(out).flatten(0, 1), tokens.flatten())

    return model, loss, f"LSTM LM N={hidden} b={batch} T={seq} V=10k"


def measure(model, loss_fn, label: str, repeats: int) -> None:
    regularizer = ModuliRegularizer(model, space="torus", strength=0.1, width_exponent=2.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    def penalty():
        optimizer.zero_grad(set_to_none=True)
        regularizer().backward()

    step_time = timed(step, repeats)
    penalty_time = timed(penalty, repeats * 3)
    print(f"{label:<44}{step_time * 1e3:>10.1f}{penalty_time * 1e3:>12.2f}{penalty_time / step_time:>10.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {args.threads} thread(s), CPU")
    print(f"{'model':<44}{'step ms':>10}{'penalty ms':>12}{'ratio':>10}")
    for case in (
        navigation_case(256, 64, 20),
        navigation_case(1024, 64, 20),
        navigation_case(1024, 200, 50),
        lstm_case(650, 20, 35),
    ):
        measure(*case, args.repeats)


if __name__ == "__main__":
    main()
