"""Flow matching against diffusion in two dimensions: their sample paths, and how far few Euler steps land from
many (notebook 10's warm-up).

Two small MLPs learn the two moons, in seconds on a CPU: one by flow matching (diffusion.RectifiedFlow: x_t =
(1 − t)·x_0 + t·ε, target ε − x_0), one by diffusion (GaussianDiffusion with v-prediction, the cpu profile's
choice, and the LDM's schedule). Both are then sampled with Euler steps from the same noise, the flow model on
dx/dt = v̂ (samplers.flow_euler_sample), the diffusion model on its probability-flow ODE (samplers.euler_sample,
which is deterministic DDIM), and every state along the way is kept. Two measures:

    straightness   mean path length / mean distance between its ends: 1 when every path is a straight line
    euler_error    mean distance of a few-step Euler sample from a `reference_steps` one from the same noise:
                   0 when every path is a straight line run at constant speed in the solver's own time

Measured here (cpu preset, seed 0, 11 s on one CPU thread): on data about as spread as the noise, the flow's
paths are *not* the straighter ones in the plane (1.82 against 1.07): its marginal at t = ½ has about half the
variance of either end, so its paths first draw in, then fan out again (for Gaussian data of unit variance they
run in and out along a ray), while the diffusion's stay close to straight lines. What flow matching makes
straight is the path against its own time, which is what an Euler step assumes: the flow's few-step error is
1.5–1.7× lower (0.54 / 0.27 / 0.14 against 0.79 / 0.44 / 0.22 at 2 / 4 / 8 steps). With a single data point its
paths are exactly straight and one Euler step is exact (tests/test_flow.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..diffusion import GaussianDiffusion, RectifiedFlow
from ..nn import timestep_embedding
from ..samplers import euler_sample, flow_euler_sample
from ..utils import rand, randn

__all__ = ["Toy2DConfig", "TOY2D", "two_moons", "ToyMLP", "train_toy", "sample_paths", "straightness",
           "euler_error", "flow_vs_diffusion_2d"]


@dataclass(frozen=True)
class Toy2DConfig:
    """The 2-D warm-up's sizes: both MLPs get the same width, steps, batch and learning rate."""

    steps: int = 2_000             # training steps of each MLP
    batch_size: int = 256
    width: int = 128
    lr: float = 2e-3
    sample_steps: int = 20         # Euler steps of the sample paths (model calls)
    num_paths: int = 500           # sample paths drawn from each model (the same starting noise for both)
    error_steps: tuple[int, ...] = (2, 4, 8)   # few-step Euler samples compared with ...
    reference_steps: int = 200                 # ... this many steps from the same noise
    noise: float = 0.05            # the moons' Gaussian jitter
    seed: int = 0


# per profile: ci shows the machinery in under a second (its numbers mean nothing); cpu and gpu take ~11 s on one thread
TOY2D = {"ci": Toy2DConfig(steps=60, batch_size=64, width=32, sample_steps=8, num_paths=64, reference_steps=32),
         "cpu": Toy2DConfig(), "gpu": Toy2DConfig()}


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """n points of the two interleaved half circles, jittered by N(0, noise²), centred and scaled to about unit
    spread -> (n, 2)."""
    theta = torch.pi * rand((n,), generator, "cpu")
    upper = rand((n,), generator, "cpu") < 0.5
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))               # upper: (cos θ, sin θ)
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))             # lower: (1 − cos θ, ½ − sin θ)
    points = torch.stack([x, y], dim=1) + noise * randn((n, 2), generator, "cpu")
    return (points - torch.tensor([0.5, 0.25])) / 0.8


class ToyMLP(nn.Module):
    """output(x, t) for points x (B, 2): [x, embedding(t)] -> 3 hidden SiLU layers -> (B, 2); `cond` is unused
    (it is there so that the model has the samplers' model_fn(x_t, t, cond) signature)."""

    def __init__(self, width: int = 128, time_dim: int = 32):
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(2 + time_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        emb = timestep_embedding(t, self.time_dim).to(x.dtype)                  # (B,) -> (B, time_dim)
        return self.net(torch.cat([x, emb], dim=1))                             # (B, 2 + time_dim) -> (B, 2)


def train_toy(process: GaussianDiffusion | RectifiedFlow, config: Toy2DConfig = Toy2DConfig()
              ) -> tuple[ToyMLP, list[float]]:
    """An MLP trained on two moons with `process`'s own loss (L_simple for diffusion, the velocity loss for a flow),
    Adam, fresh data every step; -> (model in eval mode, the loss of every step)."""
    torch.manual_seed(config.seed)                                               # the MLP's initial weights
    g = torch.Generator().manual_seed(config.seed)                               # data, t and ε
    model = ToyMLP(config.width)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses = []
    with torch.enable_grad():                    # also where a notebook switched autograd off for sampling
        for _ in range(config.steps):
            loss = process.training_loss(model, two_moons(config.batch_size, g, config.noise), generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def sample_paths(model: ToyMLP, process: GaussianDiffusion | RectifiedFlow, x_T: torch.Tensor, steps: int
                 ) -> torch.Tensor:
    """Every state of an Euler sampler started at x_T (N, 2): (steps + 1, N, 2), from the noise to the sample."""
    sampler = flow_euler_sample if isinstance(process, RectifiedFlow) else euler_sample
    x0, record = sampler(model, process, None, steps=steps, x_T=x_T, return_intermediates=True)
    return torch.stack([*record["x_t"], x0])


def straightness(paths: torch.Tensor) -> float:
    """Mean length over mean distance between the ends of paths (K + 1, N, D),
    Σ_n Σ_k ‖x_{k+1} − x_k‖ / Σ_n ‖x_K − x_0‖: 1 when all are straight, larger the more they bend. (The ratio of
    means, not the mean of ratios: a path that ends near where it began would make the latter blow up.)"""
    length = (paths[1:] - paths[:-1]).norm(dim=-1).sum(0)                         # (N,)
    return float(length.sum() / (paths[-1] - paths[0]).norm(dim=-1).sum())


def euler_error(model: ToyMLP, process: GaussianDiffusion | RectifiedFlow, x_T: torch.Tensor, steps: int,
                reference_steps: int = 200) -> float:
    """Mean ‖x(steps) − x(reference_steps)‖ of Euler samples from the same noise x_T: the discretization error."""
    reference = sample_paths(model, process, x_T, reference_steps)[-1]
    return float((sample_paths(model, process, x_T, steps)[-1] - reference).norm(dim=-1).mean())


def flow_vs_diffusion_2d(config: Toy2DConfig = Toy2DConfig()) -> dict[str, Any]:
    """Train both MLPs and sample `num_paths` paths of each from the same noise -> {"data": two moons (num_paths, 2),
    "x_T": the noise (N, 2), "flow" / "diffusion": {"paths" (sample_steps + 1, N, 2), "samples" (N, 2),
    "straightness", "euler_error" ({steps: error} for `error_steps`), "losses", "model" (the trained MLP),
    "process" (its RectifiedFlow or GaussianDiffusion)}}."""
    g = torch.Generator().manual_seed(config.seed + 1)
    x_T = randn((config.num_paths, 2), g, "cpu")                                 # one noise for both models
    out: dict[str, Any] = {"data": two_moons(config.num_paths, g, config.noise), "x_T": x_T}
    for name, process in (("flow", RectifiedFlow()), ("diffusion", GaussianDiffusion(prediction_type="v_prediction"))):
        model, losses = train_toy(process, config)
        paths = sample_paths(model, process, x_T, config.sample_steps)
        errors = {k: euler_error(model, process, x_T, k, config.reference_steps) for k in config.error_steps}
        out[name] = {"paths": paths, "samples": paths[-1], "straightness": straightness(paths),
                     "euler_error": errors, "losses": losses, "model": model, "process": process}
    return out
