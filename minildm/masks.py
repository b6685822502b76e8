"""Inpainting masks (LDM Sec. 4.5): which pixels to fill, as the trained inpainting model and the training-free
blending (`LatentDiffusion.inpaint`) take them.

Convention: a mask is (B, 1, H, W) with 1 = the hole (pixels to fill) and 0 = known pixels, as in the paper's
inpainting setup (the masked image is x·(1 − m), the hole mid-grey in [−1, 1]).

    check_mask          what every public entry point runs first: shape, 0/1 values, something known and something to fill
    training_masks      random boxes and whole objects (from the segmentation), drawn from the training generator
    box_mask            a box in pixels;  object_mask  one object of a segmentation, dilated over its antialiased rim
    part_mask           a box over one half of an object's box: the rest of the object stays visible (evaluation)
    latent_mask         the mask at the latent's resolution: a latent pixel is hole if any of its pixels is
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .utils import rand

__all__ = ["MASK_KINDS", "check_mask", "training_masks", "box_mask", "object_mask", "part_mask", "latent_mask",
           "masked_image"]

MASK_KINDS = ("box", "object")      # `minildm sample --mask`: half an object's box, or the whole object
# a training box's side, as a fraction of the image side (random boxes cover parts of objects, background, or both)
BOX_SIDES = (0.25, 0.6)


def check_mask(mask: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
    """A mask as the models take it -> (B, 1, H, W) float32 of 0 (known) / 1 (hole); `images` (B, 3, H, W) fixes
    B, H and W. Errors say what was expected: wrong shape, values other than 0 and 1, a row with no hole (nothing
    to inpaint) or all hole (nothing known: that is sampling, not inpainting)."""
    how = "1 marks the hole (pixels to fill), 0 the known pixels"
    if not torch.is_tensor(mask):
        raise ValueError(f"the mask must be a tensor (B, 1, H, W) or (B, H, W) ({how}), got {type(mask).__name__}")
    if mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"the mask must be (B, 1, H, W) or (B, H, W) ({how}), got shape {tuple(mask.shape)}")
    if images is not None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"the images must be (B, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
        if mask.shape[0] != images.shape[0] or mask.shape[2:] != images.shape[2:]:
            raise ValueError(f"one mask per image, the image's size: expected (B, 1, H, W) = "
                             f"({images.shape[0]}, 1, {images.shape[2]}, {images.shape[3]}), got {tuple(mask.shape)}")
    m = mask.float()
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError(f"mask values must be 0 or 1 ({how}), got values in [{float(m.min()):g}, {float(m.max()):g}]"
                         "; threshold a soft mask first, e.g. (mask > 0.5).float()")
    holes = m.flatten(1).sum(1)
    empty = (holes == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask row(s) {empty[:8]} have no hole (all 0): nothing to inpaint; mark the pixels to fill "
                         "with 1")
    full = (holes == m[0].numel()).nonzero().flatten().tolist()
    if full:
        raise ValueError(f"mask row(s) {full[:8]} are all hole (all 1): nothing is known, so this is sampling, not "
                         "inpainting; keep some pixels at 0, or call sample()")
    return m


def masked_image(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x·(1 − m): the hole set to 0, mid-grey in [−1, 1] (what the inpainting model is shown)."""
    return images * (1 - mask)


def box_mask(resolution: int, x0: int, y0: int, x1: int, y1: int, device: torch.device | str | None = None
             ) -> torch.Tensor:
    """(1, 1, R, R) mask of the pixels [y0, y1) × [x0, x1) (clipped to the image)."""
    r = torch.arange(resolution, device=device)
    rows = (r >= y0) & (r < y1)
    cols = (r >= x0) & (r < x1)
    return (rows[:, None] & cols[None, :]).float()[None, None]


def object_mask(segmentation: torch.Tensor, k: torch.Tensor | Sequence[int], dilate: int = 1) -> torch.Tensor:
    """(B, H, W) segmentation, object index k per row (0-based: pixels where segmentation == k + 1) -> (B, 1, H, W)
    masks, grown by `dilate` pixels: the renderer gives a pixel to an object only when it covers half of it, so the
    antialiased rim just outside would leave a thin outline of the removed object's color."""
    k = torch.as_tensor(k, device=segmentation.device).long().view(-1, 1, 1)
    m = (segmentation == k + 1).float()[:, None]
    return F.max_pool2d(m, 2 * dilate + 1, 1, dilate) if dilate else m


def part_mask(bbox: Sequence[float], side: str, resolution: int, device: torch.device | str | None = None
              ) -> torch.Tensor:
    """(1, 1, R, R): the `side` half ("left", "right", "top", "bottom") of an object's box (x0, y0, x1, y1 in pixels),
    grown by one pixel on its three outer sides; the other half of the object stays visible, the context that
    says what the object is."""
    x0, y0, x1, y1 = bbox
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x0, y0, x1, y1 = int(x0) - 1, int(y0) - 1, int(x1) + 2, int(y1) + 2       # whole pixels, one more around
    cut = {"left": (x0, y0, round(cx), y1), "right": (round(cx), y0, x1, y1), "top": (x0, y0, x1, round(cy)),
           "bottom": (x0, round(cy), x1, y1)}
    if side not in cut:
        raise ValueError(f"side must be one of {tuple(cut)}, got {side!r}")
    return box_mask(resolution, *cut[side], device=device)


def training_masks(segmentation: torch.Tensor, generator: torch.Generator | None = None,
                   object_share: float = 0.5) -> torch.Tensor:
    """The inpainting model's training masks, (B, H, W) segmentation -> (B, 1, H, W): per row, with probability
    `object_share` one whole object (uniform among the scene's objects, `object_mask`), else a random box (sides
    BOX_SIDES of the image side, anywhere). Drawn from `generator` (6 numbers per row, on the generator's device):
    the same generator state, the same masks."""
    B, H, W = segmentation.shape
    device = segmentation.device
    u = rand((B, 6), generator, device)                                         # (B, 6) U[0, 1)
    lo, hi = BOX_SIDES
    h = (H * (lo + (hi - lo) * u[:, 0])).floor().long()                          # box sides in pixels
    w = (W * (lo + (hi - lo) * u[:, 1])).floor().long()
    y0 = (u[:, 2] * (H - h + 1)).floor().long()
    x0 = (u[:, 3] * (W - w + 1)).floor().long()
    r = torch.arange(H, device=device)
    c = torch.arange(W, device=device)
    rows = (r[None] >= y0[:, None]) & (r[None] < (y0 + h)[:, None])              # (B, H)
    cols = (c[None] >= x0[:, None]) & (c[None] < (x0 + w)[:, None])              # (B, W)
    box = (rows[:, :, None] & cols[:, None, :]).float()[:, None]                 # (B, 1, H, W)
    n_objects = segmentation.flatten(1).max(1).values                            # objects are numbered 1..n
    k = (u[:, 4] * n_objects).floor().long().clamp(min=0)                        # 0-based object index
    obj = object_mask(segmentation, k)
    use_object = (u[:, 5] < object_share) & (n_objects > 0)
    return torch.where(use_object.view(B, 1, 1, 1), obj, box)


def latent_mask(mask: torch.Tensor, size: tuple[int, int], mode: str = "max") -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, 1, h, w) on the latent grid. "max": a latent pixel is hole when any of its
    pixels is (binary; what blending replaces: no known latent overlaps the hole); "area": the share of its
    pixels that are hole (what the inpainting model's mask channel holds: the hole's outline within each patch)."""
    if mode == "max":
        return F.adaptive_max_pool2d(mask, size)
    if mode == "area":
        return F.interpolate(mask, size=size, mode="area")
    raise ValueError(f"mode must be 'max' or 'area', got {mode!r}")
