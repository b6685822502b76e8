"""The course's interactive views (frame_slider: 03's noising, 06's denoising; prompt_explorer: 07). Each returns
a `View`: `.widget` to display, its plain callbacks (`.show(i)` / `.generate(prompt, s)`, which a test calls
without a browser) and `.figure()`, the static picture. Sliders move through tensors computed beforehand, so
they never run a model. Only core widgets: they render in JupyterLab, VS Code and Colab; where widgets do not
render, the static figure is still there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..eval.accuracy import prompt_accuracy
from .viz import image_grid

__all__ = ["frame_slider", "prompt_explorer", "verdicts", "View"]


@dataclass
class View:
    """A widget and the plain functions behind it."""

    widget: Any
    figure: Callable[..., Any]
    show: Callable[..., Any] | None = None
    generate: Callable[..., Any] | None = None


def _output(fig_fn: Callable[[], Any], out: Any) -> None:
    import matplotlib.pyplot as plt
    from IPython.display import display

    out.clear_output(wait=True)
    with out:
        fig = fig_fn()
        display(fig)
        plt.close(fig)


def frame_slider(frames: Sequence[torch.Tensor], titles: Sequence[str], captions: Sequence[str] | None = None,
                 description: str = "step", ncols: int = 8) -> View:
    """A slider over precomputed image batches: frames[i] is (B, 3, H, W) in [-1, 1], titles[i] its title.
    `view.figure(i)` is the grid at position i (a matplotlib Figure); `view.show(i)` draws it in the widget."""
    import ipywidgets as widgets

    if len(frames) == 0 or len(frames) != len(titles):
        raise ValueError(f"need one title per frame and at least one frame, got {len(frames)} frames and "
                         f"{len(titles)} titles")

    def figure(i: int = 0):
        return image_grid(frames[i], captions, ncols=ncols, title=titles[i])

    out = widgets.Output()
    slider = widgets.IntSlider(value=0, min=0, max=len(frames) - 1, step=1, description=description,
                               continuous_update=False)

    def show(i: int) -> None:
        _output(lambda: figure(i), out)

    slider.observe(lambda change: show(change["new"]), names="value")
    show(0)
    return View(widget=widgets.VBox([slider, out]), figure=figure, show=show)


def verdicts(images: torch.Tensor, prompt: str) -> list[str]:
    """The Shapes evaluator's verdict on each image for `prompt`: "✓ all hold" (every condition), or "✗" and what
    fails (the object count, the relation, or an object's shape, color, size or position)."""
    r = prompt_accuracy(images, [prompt] * len(images))
    out = []
    for i, ok in enumerate(r["correct"].tolist()):
        wrong = [] if r["count_ok"][i] else ["object count"]
        for k, cond in enumerate(r["objects"][i]):
            wrong += [f"{a} of object {k + 1}" if len(r["objects"][i]) > 1 else a for a, held in cond.items()
                      if not held]
        out.append("✓ all hold" if ok else "✗ " + (", ".join(wrong) or "relation"))
    return out


def prompt_explorer(ldm: Any, prompt: str = "a large red circle in the top left", guidance_scale: float = 3.0,
                    n: int = 4, steps: int = 25, seed: int = 0) -> View:
    """Type a prompt, pick a guidance scale, press Generate: n samples (DDIM, fixed seed) appear below.
    `view.generate(prompt, s)` returns the images (n, 3, H, W) and draws them; an unknown word gives the
    tokenizer's message in the output instead of a traceback."""
    import ipywidgets as widgets

    text = widgets.Text(value=prompt, description="prompt", layout=widgets.Layout(width="60%"))
    scale = widgets.FloatSlider(value=guidance_scale, min=0.0, max=10.0, step=0.5, description="guidance s")
    button = widgets.Button(description="Generate")
    out = widgets.Output()

    def images(p: str, s: float) -> torch.Tensor:
        raw = ldm.prompt_condition(prompts=[p] * n)
        return ldm.sample(raw, steps=steps, guidance_scale=s, generator=torch.Generator().manual_seed(seed)).cpu()

    def figure(p: str = prompt, s: float = guidance_scale, x: torch.Tensor | None = None):   # x: already drawn
        x = images(p, s) if x is None else x
        return image_grid(x, [f"{p}\nevaluator: {v}" for v in verdicts(x, p)], ncols=n,
                          title=f"guidance s = {s:g}, DDIM-{steps}, seed {seed}")

    def generate(p: str, s: float) -> torch.Tensor | None:
        try:
            x = images(p, s)
        except ValueError as e:                               # unknown word, blank prompt: say so, do not crash
            out.clear_output(wait=True)
            with out:
                print(f"cannot sample: {e}")
            return None
        _output(lambda: figure(p, s, x), out)
        return x

    button.on_click(lambda _: generate(text.value, scale.value))
    return View(widget=widgets.VBox([widgets.HBox([text, scale, button]), out]), figure=figure, generate=generate)
