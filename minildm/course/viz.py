"""Pictures: image grids, sample grids of a model, denoising filmstrips (x_t and x̂_0), latents as images,
attention maps over images, and the spherical interpolation between two latents that notebook 02 draws."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.datasets import ShapesDataset
from ..data.shapes import class_name

__all__ = ["to_display", "image_grid", "save_figure", "filmstrip", "denoising_filmstrip", "latent_trajectory",
           "save_sample_grid", "SampleGrids", "latent_grid", "attention_overlay", "DEFAULT_PROMPTS", "training_view",
           "LiveTraining", "slerp"]

DEFAULT_PROMPTS = (
    "a large red circle in the top left", "a small blue square in the center",
    "a large yellow triangle in the bottom right", "a small green star in the top middle",
    "a large purple square in the middle left", "a small orange circle in the bottom middle",
    "a large blue star in the middle right", "a small red triangle in the bottom left",
)


def to_display(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) in [0, 1] on the CPU, for matplotlib."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1)


def image_grid(images: torch.Tensor, captions: Sequence[str] | None = None, ncols: int = 8,
               title: str | None = None, cell_inches: float = 1.6):
    """A matplotlib Figure with the images in a grid, each with its caption (wrapped; a newline starts a line)."""
    import matplotlib.pyplot as plt

    x = to_display(images)
    n = x.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    text_h = 0.6 if captions else 0.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell_inches, nrows * (cell_inches + text_h)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i].numpy(), interpolation="nearest")
            if captions:
                ax.set_title("\n".join(line for part in captions[i].split("\n") for line in textwrap.wrap(part, 26)),
                             fontsize=6.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, close: bool = True) -> Path:
    """Save a figure (creating folders) and close it (close=False: keep it open for a notebook to show); returns
    the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    if close:
        plt.close(fig)
    return path


def _label_cells(axes: Any, column_titles: Sequence[str], row_titles: Sequence[str] | None, wrap: int,
                 title: str | None) -> None:
    """A grid of axes without ticks: column titles over the first row, (wrapped) row titles left of the first
    column, the figure's title over all."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, text in zip(axes[0], column_titles):
        ax.set_title(text, fontsize=7)
    for ax, text in zip(axes[:, 0], row_titles or ()):
        ax.set_ylabel("\n".join(textwrap.wrap(text, wrap)), fontsize=6.5, rotation=0, ha="right", va="center")
    if title:
        axes.flat[0].figure.suptitle(title, fontsize=9)


def filmstrip(frames: Sequence[torch.Tensor], column_titles: Sequence[str], row_titles: Sequence[str] | None = None,
              cell_inches: float = 1.2, title: str | None = None):
    """Rows = samples, columns = denoising steps: frames[j] is a (B, 3, H, W) batch shown in column j."""
    import matplotlib.pyplot as plt

    if len(frames) != len(column_titles):
        raise ValueError(f"{len(frames)} frames but {len(column_titles)} column titles")
    cols = [to_display(f) for f in frames]
    nrows, ncols = cols[0].shape[0], len(cols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell_inches + (1.8 if row_titles else 0),
                                                    nrows * cell_inches + 0.5), squeeze=False)
    for i in range(nrows):
        for j in range(ncols):
            axes[i, j].imshow(cols[j][i].numpy(), interpolation="nearest")
    _label_cells(axes, column_titles, row_titles, 22, title)
    fig.tight_layout()
    return fig


def _shown_steps(ldm: Any, trajectory: dict, every: int, rows: slice = slice(None)
                 ) -> tuple[list[int], list[str], dict[str, list[torch.Tensor]]]:
    """Every `every`-th step of a sampling trajectory and its last one, their column titles, and the sampler's
    states x_t and predictions x̂_0 there (of the samples `rows`) decoded to images on the CPU."""
    n = len(trajectory["timesteps"])
    if n == 0 or every < 1:
        raise ValueError(f"need a non-empty trajectory and every ≥ 1, got {n} steps and every={every}")
    steps, device = sorted(set(range(0, n, every)) | {n - 1}), ldm.scale_factor.device
    decoded = {k: [ldm.decode(trajectory[k][s][rows].to(device)).cpu() for s in steps] for k in ("x_t", "pred_x0")}
    return steps, [f"step {s}, t={trajectory['timesteps'][s]}" for s in steps], decoded


@torch.no_grad()
def denoising_filmstrip(ldm: Any, trajectory: dict, captions: Sequence[str], every: int = 5, title: str | None = None):
    """The denoising trajectory of `ldm.sample(..., return_intermediates=True)`, two rows per sample:
    the sampler's state x_t decoded (noise at first, the image at the end) and its prediction x̂_0 at that
    step, for every `every`-th step and the last one. Columns are titled with the step and its timestep t."""
    _, cols, decoded = _shown_steps(ldm, trajectory, every)
    frames = [torch.stack([decoded[k][j][i] for i in range(len(captions)) for k in ("x_t", "pred_x0")])
              for j in range(len(cols))]
    rows = [f"{label}: {c}" for c in captions for label in ("x_t", "x̂0")]
    return filmstrip(frames, cols, rows, cell_inches=1.1, title=title)


@torch.no_grad()
def latent_trajectory(ldm: Any, trajectory: dict, index: int = 0, every: int = 5, title: str | None = None):
    """One sample of `ldm.sample(..., return_intermediates=True)` in the space the U-Net denoises: a row per
    channel of the state z_t (one diverging scale for every latent cell, 0 white, with a color bar), then z_t and
    the prediction ẑ₀ decoded, for every `every`-th step and the last."""
    import matplotlib.pyplot as plt

    steps, cols, decoded = _shown_steps(ldm, trajectory, every, slice(index, index + 1))
    z = torch.stack([trajectory["x_t"][s][index] for s in steps]).float().cpu()          # (steps, c, h, w)
    images = [to_display(torch.cat(decoded[k])) for k in ("x_t", "pred_x0")]
    C, vmax = z.shape[1], float(z.abs().max())
    fig, axes = plt.subplots(C + 2, len(steps), figsize=(len(steps) + 2.2, C + 2.6), squeeze=False)   # 1-inch cells
    for j in range(len(steps)):
        for c in range(C):
            im = axes[c, j].imshow(z[j, c].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        for r, frames in enumerate(images):
            axes[C + r, j].imshow(frames[j].numpy(), interpolation="nearest")
    h, w = z.shape[-2:]
    rows = [f"z_t channel {c} ({h}×{w})" for c in range(C)] + ["z_t decoded", "ẑ₀ decoded"]
    _label_cells(axes, cols, rows, 16, title)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=C / (C + 2), anchor=(0.0, 1.0), label="latent value (scaled)")
    return fig


def save_sample_grid(ldm: Any, path: str | os.PathLike, n: int = 8, seed: int = 0,
                     title: str | None = None) -> Path:
    """A grid of samples for the model's conditioning mode (fixed prompts / classes / validation layouts, low-res
    images, semantic maps, images with a training-style hole)."""
    g = torch.Generator().manual_seed(seed)
    captions = None
    if ldm.cond_mode == "text":
        captions = list(DEFAULT_PROMPTS[:n])
        raw = ldm.prompt_condition(prompts=captions)
    elif ldm.cond_mode == "class":
        labels = [(7 * i) % ldm.num_classes for i in range(n)]
        raw = ldm.prompt_condition(labels=labels)
        captions = [class_name(c) if ldm.num_classes == 24 else f"class {c}" for c in labels]
    elif ldm.cond_mode in ("layout", "sr", "seg", "inpaint"):   # validation layouts, images, maps, holes
        val = ShapesDataset("val", resolution=ldm.resolution, size=max(n, 8)).batch(range(n))
        raw = ldm.raw_condition(val, torch.Generator().manual_seed(seed + 1)).to(ldm.scale_factor.device)
        captions = val["caption"]
    else:
        raw = None
    images = ldm.sample(raw, num_samples=n if raw is None else None, generator=g)
    return save_figure(image_grid(images, captions, ncols=min(8, n), title=title), path)


def latent_grid(z: torch.Tensor, row_titles: Sequence[str] | None = None, title: str | None = None,
                signed: bool = True):
    """Latents (B, c, h, w) as images, one column per channel, one scale for the whole figure and a color bar:
    signed values (a mean, a latent) in a diverging map centred on 0 (blue negative, white 0, red positive);
    signed=False for a positive quantity (a standard deviation) in a sequential map from 0."""
    import matplotlib.pyplot as plt

    if z.dim() != 4:
        raise ValueError(f"expected latents of shape (B, c, h, w), got {tuple(z.shape)}")
    z = z.detach().float().cpu()
    B, C = z.shape[:2]
    vmax = float(z.abs().max())
    cmap, vmin = ("RdBu_r", -vmax) if signed else ("viridis", 0.0)
    fig, axes = plt.subplots(B, C, figsize=(C * 1.2 + 1.2, B * 1.2 + 0.4), squeeze=False)
    for i in range(B):
        for c in range(C):
            im = axes[i, c].imshow(z[i, c].numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    _label_cells(axes, [f"channel {c}" for c in range(C)], row_titles, 18, title)
    fig.colorbar(im, ax=axes, shrink=0.8)
    return fig


def attention_overlay(image: torch.Tensor, maps: torch.Tensor, words: Sequence[str], title: str | None = None,
                      uniform: float | None = None):
    """An image (3, H, W) and, next to it, one panel per word: the image in grey with that word's attention
    map (H, W) over it, every panel on one scale from 0 to the largest value of any map (so that a weak map
    looks weak), with its color bar; each title gives its map's maximum. `uniform`: the level of attention
    spread evenly over the tokens (1/k), marked on the color bar."""
    import matplotlib.pyplot as plt

    if maps.dim() != 3 or len(maps) != len(words) or maps.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"need one (H, W) map per word matching the image: got maps {tuple(maps.shape)}, "
                         f"{len(words)} words, image {tuple(image.shape)}")
    rgb = to_display(image[None])[0]
    grey = rgb.mean(-1)
    vmax = max(float(maps.max()), uniform or 0.0)
    fig, axes = plt.subplots(1, len(words) + 1, figsize=((len(words) + 1) * 1.6 + 0.8, 2.2), layout="constrained")
    axes[0].imshow(rgb.numpy(), interpolation="nearest")
    axes[0].set_title("sample", fontsize=8)
    for ax, m, w in zip(axes[1:], maps, words):
        ax.imshow(grey.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        im = ax.imshow(m.float().numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=vmax, interpolation="bilinear")
        ax.set_title(f'"{w}"\nmax {float(m.max()):.2f}', fontsize=7)
    for ax in axes:
        ax.axis("off")
    bar = fig.colorbar(im, ax=axes[1:].tolist(), shrink=0.8, label="attention")
    if uniform is not None:                       # a tick of its own, away from the others
        bar.ax.axhline(uniform, color="cyan", lw=2)
        ticks = [t for t in bar.get_ticks() if 0 <= t <= vmax and abs(t - uniform) > 0.12 * vmax]
        bar.set_ticks(ticks + [uniform], labels=[f"{t:.2g}" for t in ticks] + [f"uniform 1/{round(1 / uniform)}"])
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


class SampleGrids:
    """A train_ldm callback: every `every` steps, a grid of samples with the run's EMA weights (save_sample_grid)
    into folder/samples_<step>.png. Sampling draws no training randomness and the raw weights are put back bit for
    bit, so the run goes on exactly as without it (`minildm train-ldm --sample-every N`)."""

    def __init__(self, every: int, folder: str | os.PathLike):
        self.every, self.folder = every, Path(folder)

    def __call__(self, step: int, record: dict, run: Any) -> None:
        if self.every and step % self.every == 0:
            with run.ema_weights() as ldm:
                save_sample_grid(ldm, self.folder / f"samples_{step:06d}.png", title=f"step {step} (EMA weights)")


def training_view(history: Sequence[dict], snapshots: dict[int, torch.Tensor], at_steps: Sequence[int],
                  prompts: Sequence[str], title: str | None = None, cell_inches: float = 0.95):
    """Training as far as it went: the loss of every step so far (and its moving average) over the whole run's
    x-axis, and under it one column per snapshot step in `at_steps` (the same prompts, rows; empty until taken)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    at_steps, rows = sorted(at_steps), len(prompts)
    loss_inches = 2.2
    fig = plt.figure(figsize=(len(at_steps) * cell_inches + 1.6, rows * cell_inches + loss_inches + 0.6))
    top, bottom = fig.subfigures(2, 1, height_ratios=[loss_inches + 0.4, rows * cell_inches + 0.2])
    ax = top.subplots()
    steps, loss = [r["step"] for r in history], torch.tensor([float(r["loss"]) for r in history])
    if len(loss):
        k = max(1, len(loss) // 40)
        ax.plot(steps, loss, color="tab:purple", alpha=0.25, lw=0.6)
        ax.plot(steps[k - 1:], loss.unfold(0, k, 1).mean(1), color="tab:purple", label=f"moving average of {k}")
        ax.legend(loc="upper right", fontsize=7)
    for s in at_steps:
        ax.axvline(s, color="gray", ls=":", lw=0.8)
    ax.set(xscale="log", xlim=(0.9, 1.1 * at_steps[-1]), yscale="log", ylabel="loss")
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training step (log scale; dotted: the snapshots below)", fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        top.suptitle(title, fontsize=9)
    cells = bottom.subplots(rows, len(at_steps), squeeze=False)
    blank = torch.ones(32, 32, 3) * 0.94
    for j, s in enumerate(at_steps):
        for i in range(rows):
            cell = cells[i, j]
            cell.set(xticks=[], yticks=[])
            cell.imshow(to_display(snapshots[s][i:i + 1])[0].numpy() if s in snapshots else blank.numpy(),
                        interpolation="nearest")
            if i == 0:
                cell.set_title(f"step {s}" if s in snapshots else f"step {s}\n(to come)", fontsize=7,
                               color="black" if s in snapshots else "gray")
            if j == 0:
                cell.set_ylabel(textwrap.fill(prompts[i], 22), fontsize=6, rotation=0, ha="right", va="center")
    bottom.subplots_adjust(left=1.5 / fig.get_figwidth(), right=0.99, top=0.93, bottom=0.01, wspace=0.06, hspace=0.06)
    top.subplots_adjust(left=1.5 / fig.get_figwidth(), right=0.99, top=0.85, bottom=0.25)
    return fig


class LiveTraining:
    """A train_ldm callback that lets you watch: `snapshots` (train.stages.SampleSnapshots) samples its prompts at
    its steps, and each time it does, one figure (training_view: the loss so far, the snapshots so far) is redrawn
    in place in the notebook. `shown`: how many of the snapshots' prompts the figure shows."""

    def __init__(self, snapshots: Any, shown: int, title: str | None = None):
        self.snapshots, self.shown, self.title, self.handle = snapshots, shown, title, None

    def __call__(self, step: int, record: dict, run: Any) -> None:
        new = step in self.snapshots.at_steps and step not in self.snapshots.images
        self.snapshots(step, record, run)
        if new:
            self.draw(run.history)

    def draw(self, history: Sequence[dict]):
        """Draw (or redraw in place) the figure for `history`; returns it."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = training_view(history, {s: x[:self.shown] for s, x in self.snapshots.images.items()},
                            self.snapshots.at_steps, self.snapshots.prompts[:self.shown], self.title)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
        return fig


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between a and b (batch-first; each row is one vector) at fraction t ∈ [0, 1]:

        slerp(a, b, t) = sin((1 − t)·ω)/sin ω · a + sin(t·ω)/sin ω · b,   cos ω = ⟨a, b⟩ / (‖a‖·‖b‖)

    It follows the great circle instead of the chord, so the midpoint of two Gaussian noise vectors keeps the
    norm a Gaussian sample has (a straight average shrinks it by ~√2). Rows with ω ≈ 0 fall back to lerp.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs two tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device)
    fa, fb = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    omega = torch.acos(cos.clamp(-1.0, 1.0))                            # angle between the rows, (B,)
    so = torch.sin(omega)
    close = so.abs() < 1e-6
    wa = torch.where(close, 1 - t, torch.sin((1 - t) * omega) / torch.where(close, 1.0, so))
    wb = torch.where(close, t, torch.sin(t * omega) / torch.where(close, 1.0, so))
    out = wa[:, None] * fa + wb[:, None] * fb
    return out.reshape(a.shape).to(a.dtype)
