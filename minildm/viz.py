"""Pictures: image grids with captions (more views arrive with the notebooks: latents, filmstrips, attention)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def to_display(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) in [0, 1] on the CPU, for matplotlib."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1)


def image_grid(images: torch.Tensor, captions: Sequence[str] | None = None, ncols: int = 8,
               title: str | None = None, cell_inches: float = 1.6, fontsize: float = 6.5):
    """A matplotlib Figure with the images in a grid, each with its (wrapped) caption."""
    import textwrap

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
                ax.set_title("\n".join(textwrap.wrap(captions[i], 26)), fontsize=fontsize)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure (creating folders) and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


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
            ax = axes[i, j]
            ax.imshow(cols[j][i].numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column_titles[j], fontsize=7)
            if j == 0 and row_titles:
                ax.set_ylabel("\n".join(__import__("textwrap").wrap(row_titles[i], 22)), fontsize=6.5,
                              rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
