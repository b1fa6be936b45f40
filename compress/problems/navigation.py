"""Navigation (path integration) task of the moduli paper (Mackey et al., 2024), after Sorscher et al.'s grid-cell RNN.

An agent runs random walks in a 2.2 m x 2.2 m box (dt = 0.02 s, Rayleigh-distributed forward speeds, Gaussian turning,
turning away from walls it is heading into). The RNN sees only the 2-D velocity; its initial state is a linear map of
the start position's place-cell code, and it must output the place-cell code of the current position. Place cells have
difference-of-Gaussians tuning (sigma = 0.12 m, surround 2x wider); targets are the normalised DoG of two softmaxes.
The metric is the decoded position error in cm: the mean of the centres of the 3 most active predicted place cells
against the true position.

Every size is a field of :class:`NavigationConfig`; the defaults are the paper's (4096 units, 512 place cells,
50 steps, batch 200).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class NavigationConfig:
    hidden_size: int = 4096
    place_cells: int = 512
    sequence_length: int = 50
    batch_size: int = 200
    box_size: float = 2.2  # metres, square box centred on the origin
    dt: float = 0.02  # seconds per step
    place_cell_width: float = 0.12  # sigma of the place-cell tuning, metres
    surround_scale: float = 2.0  # the surround Gaussian is this much wider
    speed_scale: float = 0.13 * 2 * math.pi  # Rayleigh scale of the forward speed, m/s
    turn_sigma: float = 5.76 * 2  # standard deviation of the rotational velocity, rad/s
    border_region: float = 0.03  # metres: closer than this to a wall it is heading into, the agent turns away
    wall_slowdown: float = 0.25  # speed factor while turning away from a wall
    decode_top_k: int = 3
    # W_hh initialisation: "default" (PyTorch's uniform, the paper's), "identity" (IRNN, Le et al. 2015: the ReLU RNN
    # starts as a perfect integrator) or "orthogonal". Short CPU runs need one of the latter two to converge.
    recurrent_init: str = "default"
    # Input preconditioning (1.0 = the paper): the velocity input is metres per step (~0.02) and the start code sums to
    # 1, so with the paper's init the network first spends thousands of steps growing W_ih and the encoder. Scaling
    # them (e.g. 1 / dt = 50: velocity in m/s) is a fixed reparametrisation that lets short runs converge.
    velocity_input_scale: float = 1.0
    start_code_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.recurrent_init not in ("default", "identity", "orthogonal"):
            raise ValueError(f"recurrent_init must be default, identity or orthogonal, got {self.recurrent_init!r}")
        for name in ("hidden_size", "place_cells", "sequence_length", "batch_size", "decode_top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decode_top_k > self.place_cells:
            raise ValueError(f"decode_top_k ({self.decode_top_k}) exceeds place_cells ({self.place_cells})")
        for name in ("box_size", "dt", "place_cell_width", "surround_scale", "speed_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Trajectories:
    velocity: Tensor  # (batch, T, 2) displacement per step, metres (= speed * dt along the heading)
    position: Tensor  # (batch, T, 2) position after each step
    start: Tensor  # (batch, 2) position before the first step


def _wall_turn(position: Tensor, heading: Tensor, half: float, border: float) -> tuple[Tensor, Tensor]:
    """Which agents are near a wall and heading into it, and the turn that makes them run parallel to it."""
    x, y = position[:, 0], position[:, 1]
    gaps = torch.stack([half - x, half - y, half + x, half + y], dim=1)  # east, north, west, south walls
    gap, wall = gaps.min(dim=1)
    wall_direction = wall.to(heading.dtype) * (math.pi / 2)
    relative = torch.remainder(heading - wall_direction + math.pi, 2 * math.pi) - math.pi
    near = (gap < border) & (relative.abs() < math.pi / 2)
    turn = torch.where(near, torch.sign(relative) * (math.pi / 2 - relative.abs()), torch.zeros_like(relative))
    return near, turn


def simulate_trajectories(config: NavigationConfig, batch_size: int | None = None, *, generator=None) -> Trajectories:
    """Random walks in the box (seeded through ``generator``): Rayleigh speeds, Gaussian turns, wall avoidance."""
    batch = batch_size or config.batch_size
    steps = config.sequence_length
    half = config.box_size / 2
    position = (torch.rand(batch, 2, generator=generator) - 0.5) * config.box_size
    heading = (torch.rand(batch, generator=generator) * 2 - 1) * math.pi
    turns = torch.randn(batch, steps, generator=generator) * config.turn_sigma
    # Rayleigh(scale) by inversion: scale * sqrt(-2 ln(1 - U)).
    uniform = torch.rand(batch, steps, generator=generator)
    speeds = config.speed_scale * torch.sqrt(-2.0 * torch.log1p(-uniform))
    start = position.clone()
    velocities, positions = [], []
    for t in range(steps):
        near, turn = _wall_turn(position, heading, half, config.border_region)
        speed = torch.where(near, speeds[:, t] * config.wall_slowdown, speeds[:, t])
        heading = heading + turn + config.dt * turns[:, t]
        step = (speed * config.dt)[:, None] * torch.stack([torch.cos(heading), torch.sin(heading)], dim=1)
        # Wall avoidance keeps agents inside in practice; the clamp guarantees it.
        position = (position + step).clamp(-half, half)
        velocities.append(step)
        positions.append(position)
    return Trajectories(torch.stack(velocities, 1), torch.stack(positions, 1), start)


class PlaceCells:
    """Place-cell centres (uniform in the box, seeded) and the DoG place-cell code of positions."""

    def __init__(self, config: NavigationConfig, seed: int = 0) -> None:
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        self.centres = (torch.rand(config.place_cells, 2, generator=generator) - 0.5) * config.box_size

    def code(self, position: Tensor) -> Tensor:
        """(..., 2) positions -> (..., n_place) target distributions: softmax(-d^2/2s^2) - softmax(-d^2/2(rs)^2),
        shifted to be non-negative and normalised to sum to 1."""
        d2 = (position[..., None, :] - self.centres.to(position)).square().sum(-1)
        sigma, surround = self.config.place_cell_width, self.config.place_cell_width * self.config.surround_scale
        dog = F.softmax(-d2 / (2 * sigma**2), dim=-1) - F.softmax(-d2 / (2 * surround**2), dim=-1)
        dog = dog - dog.min(dim=-1, keepdim=True).values
        return dog / dog.sum(dim=-1, keepdim=True)

    def decode(self, activity: Tensor) -> Tensor:
        """(..., n_place) activity -> (..., 2) position: mean centre of the ``decode_top_k`` most active cells."""
        top = activity.topk(self.config.decode_top_k, dim=-1).indices
        return self.centres.to(activity.device)[top].mean(dim=-2)


def init_recurrent(rnn: nn.Module, kind: str) -> None:
    """Initialise every recurrent matrix of ``rnn`` gate block by gate block: "identity" (IRNN), "orthogonal", or
    "default" (leave the layer's own). Works for nn.RNN/LSTM/GRU (W_hh is (G*H, H)) and for predefined-sparse layers,
    whose per-component blocks (G*h_c, h_c) then form a block-diagonal identity - exactly their sparsity pattern."""
    if kind == "default":
        return
    with torch.no_grad():
        for name, weight in rnn.named_parameters():
            if not name.startswith("weight_hh"):
                continue
            size = weight.shape[1]
            for block in weight.split(size, dim=0):
                if kind == "identity":
                    block.copy_(torch.eye(size, dtype=block.dtype))
                else:
                    nn.init.orthogonal_(block)


class NavigationRNN(nn.Module):
    """ReLU RNN without biases: h_0 = encoder(place code of the start), h_t = relu(W_ih v_t + W_hh h_{t-1}),
    place-cell logits = decoder(h_t). ``rnn`` replaces the paper's layer (same call conventions, batch_first)."""

    def __init__(self, config: NavigationConfig, rnn: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.Linear(config.place_cells, config.hidden_size, bias=False)
        self.rnn = rnn or nn.RNN(2, config.hidden_size, nonlinearity="relu", bias=False, batch_first=True)
        self.decoder = nn.Linear(config.hidden_size, config.place_cells, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.encoder, self.rnn, self.decoder):
            module.reset_parameters()
        init_recurrent(self.rnn, self.config.recurrent_init)

    def forward(self, velocity: Tensor, start_code: Tensor) -> Tensor:
        h0 = self.encoder(start_code * self.config.start_code_scale).unsqueeze(0)
        hidden, _ = self.rnn(velocity * self.config.velocity_input_scale, h0)
        return self.decoder(hidden)


class NavigationProblem:
    """Data, loss and metric together: ``batch()`` -> (velocity, start code, target codes, positions)."""

    def __init__(self, config: NavigationConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or NavigationConfig()
        self.place_cells = PlaceCells(self.config, seed)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def model(self) -> NavigationRNN:
        return NavigationRNN(self.config)

    def batch(self, batch_size: int | None = None, generator=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        paths = simulate_trajectories(self.config, batch_size, generator=generator or self.generator)
        return (
            paths.velocity,
            self.place_cells.code(paths.start),
            self.place_cells.code(paths.position),
            paths.position,
        )

    @staticmethod
    def loss(logits: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy to the target distributions, mean over batch and time."""
        return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()

    def position_error_cm(self, logits: Tensor, position: Tensor) -> Tensor:
        return 100.0 * (self.place_cells.decode(logits) - position).norm(dim=-1).mean()


def write_trajectories(path, count: int, steps: int = 50, *, seed: int = 0, config: NavigationConfig | None = None):
    """Simulated walks as a ``trajectories`` file (compress.data): velocity = displacement per step in metres."""
    import numpy as np

    config = config or NavigationConfig()
    config = NavigationConfig(**{**config.__dict__, "sequence_length": steps})
    walks = simulate_trajectories(config, count, generator=torch.Generator().manual_seed(seed))
    np.savez(path, velocity=walks.velocity.numpy(), position=walks.position.numpy(), start=walks.start.numpy())
    return path


def main(argv: list[str] | None = None) -> None:
    """python -m compress.problems.navigation --out walks.npz --count 2000: trajectories to upload."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument("--count", type=int, default=1000, help="trajectories (the last 10%% are held out)")
    parser.add_argument("--steps", type=int, default=50, help="steps per trajectory (dt = 0.02 s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_trajectories(args.out, args.count, args.steps, seed=args.seed)
    print(f"{args.out}: {args.count} trajectories of {args.steps} steps")


if __name__ == "__main__":
    main()
