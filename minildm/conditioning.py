"""Conditioning encoders τθ(y) of latent diffusion (LDM Sec. 3.3): class, text, layout, low-res image, semantic
map, masked image.

Every encoder maps a raw condition to a dict of U-Net keyword arguments, `eps_hat = unet(z_t, t, **encoder(raw))`,
and knows its "unconditional" input for classifier-free guidance (Ho & Salimans 2021): `null_condition(raw)` is
the raw input that means "no condition", shaped like `raw` (null class, empty caption, empty layout), and
`drop(raw, p, generator)` swaps each row for it with probability p (the ~10 % conditioning dropout of training).

    ClassEmbedder  label            -> {"y"}                        (added to the time embedding)
    TextEncoder    token ids        -> {"context", "context_mask"}  (cross-attention; trained with the U-Net)
    LayoutEncoder  boxes + classes  -> {"context", "context_mask"}  (cross-attention, one token per object)
    LowResConcat   low-res image    -> {"concat"}                   (concatenated to z_t; super-resolution)
    SemanticConcat class map        -> {"concat"}                   (class shares per latent pixel; semantic synthesis)
    InpaintConcat  masked image + m -> {"concat"}                   (its latent and the mask; inpainting)
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .nn import CrossAttention
from .utils import rand

__all__ = ["Conditioner", "ClassEmbedder", "ClassToken", "TextEncoder", "TextTransformerBlock", "LayoutEncoder",
           "LowResConcat", "SemanticConcat", "InpaintConcat", "check_class_map", "drop_rows", "WordTokenizer",
           "MASK_KINDS", "check_mask", "training_masks", "object_mask", "latent_mask"]


def drop_rows(raw: torch.Tensor, null: torch.Tensor, p: float, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """Replace each row of `raw` by the same row of `null` with probability p (CFG conditioning dropout)."""
    B = raw.shape[0]
    dropped = rand((B,), generator, raw.device) < p                                      # (B,) Bernoulli(p)
    return torch.where(dropped.view(B, *[1] * (raw.dim() - 1)), null.to(raw.dtype), raw)


class Conditioner(nn.Module):
    """Common interface: forward(raw) -> U-Net kwargs; null_condition(raw) -> raw null input; drop(raw, p, gen)."""

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def drop(self, raw: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Classifier-free guidance dropout: each row becomes `null_condition` with probability p."""
        return drop_rows(raw, self.null_condition(raw), p, generator)


# --- Class labels -------------------------------------------------------------------------------------------


class ClassEmbedder(Conditioner):
    """Class labels -> {"y": ids} for the U-Net's class embedding; index `num_classes` is the null class.

    The embedding table lives in the U-Net (`UNet(num_classes=K)` has K + 1 rows), so this encoder has no
    parameters: it maps the Shapes convention "label −1 = no single class" (scenes
    with several objects) to the null class.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.null_index = num_classes

    def forward(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """labels (B,) in {−1, 0..K} (−1 and K = null) -> {"y": (B,) int64 in 0..K}."""
        labels = torch.as_tensor(labels).long()
        return {"y": torch.where(labels < 0, torch.full_like(labels, self.null_index), labels)}

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        """(B,) labels all equal to the null class `num_classes`."""
        return torch.full((like.shape[0],), self.null_index, dtype=torch.int64, device=like.device)


class ClassToken(ClassEmbedder):
    """The paper's class route (LDM Sec. 4.1 / the reference's cin-ldm configs: `conditioning_key: crossattn`
    with a ClassEmbedder): the label becomes ONE learned token that the U-Net reads through cross-attention,
    like a one-word caption. Row `num_classes` of the table is the null class (classifier-free guidance).
    minildm's default route (`ClassEmbedder`, ADM's) adds the label to the time embedding instead."""

    def __init__(self, num_classes: int, width: int):
        super().__init__(num_classes)
        self.table = nn.Embedding(num_classes + 1, width)

    def forward(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """labels (B,) in {−1, 0..K} -> {"context": (B, 1, width)}: one token per image."""
        return {"context": self.table(super().forward(labels)["y"])[:, None]}


# --- Text: a small transformer over token ids, trained jointly with the U-Net (LDM Sec. 4.3.1) --------------


class TextTransformerBlock(nn.Module):
    """Pre-LN transformer block: x += Attn(LN(x)) over real tokens; x += MLP(LN(x)) with GELU, 4× width."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = CrossAttention(width, None, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)     # (B, L, D); padding keys are masked out
        return x + self.mlp(self.norm2(x))


class TextEncoder(Conditioner):
    """τθ for captions: token + learned position embeddings → pre-LN transformer → LN (LDM Sec. 3.3, 4.3).

    Bidirectional (no causal mask, like the reference's BERT-style text model); padding tokens are never
    attended to, inside the encoder nor (via context_mask) by the U-Net. Token ids follow `WordTokenizer`.

    Token and position embeddings start at unit variance, not at the 0.02 of BERT, GPT-2 and CLIP: 0.02-std
    embeddings drown in the blocks' outputs and a one-word change hardly reaches the U-Net ("circle" and "square"
    came out as the same rounded square; docs/design-notes.md).
    """

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int, pad_id: int = 0,
                 bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        self.vocab_size, self.context_length, self.width = vocab_size, context_length, width
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.token_emb = nn.Embedding(vocab_size, width)
        self.pos_emb = nn.Parameter(torch.zeros(context_length, width))
        nn.init.normal_(self.token_emb.weight, std=1.0)   # unit variance: see the class docstring
        nn.init.normal_(self.pos_emb, std=1.0)            # as large as the words, so word order is visible too
        self.blocks = nn.ModuleList(TextTransformerBlock(width, heads) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)

    @classmethod
    def from_tokenizer(cls, tokenizer, width: int, layers: int, heads: int) -> "TextEncoder":
        """Sizes and special ids from a tokenizer (vocab_size, context_length, pad/bos/eos ids)."""
        return cls(tokenizer.vocab_size, tokenizer.context_length, width, layers, heads,
                   pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)

    @classmethod
    def from_config(cls, cfg, tokenizer) -> "TextEncoder":
        """width = cfg.context_dim, layers = cfg.text_layers, heads = cfg.num_heads (an `LDMConfig`)."""
        return cls.from_tokenizer(tokenizer, cfg.context_dim, cfg.text_layers, cfg.num_heads)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens (B, L) int64 -> {"context": (B, L, width), "context_mask": (B, L) bool, True = real token}.

        Rows come from the tokenizer, so each holds <bos> and <eos>: never a row of padding only."""
        L = tokens.shape[1]
        mask = tokens != self.pad_id                                         # (B, L)
        x = self.token_emb(tokens) + self.pos_emb[:L]                       # (B, L) -> (B, L, D)
        for block in self.blocks:
            x = block(x, mask)
        return {"context": self.final_norm(x), "context_mask": mask}

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        """Token ids of the empty caption "": [bos, eos, pad, …], shaped like the (B, L) tokens `like`."""
        null = torch.full(tuple(like.shape), self.pad_id, dtype=torch.int64, device=like.device)
        null[:, 0], null[:, 1] = self.bos_id, self.eos_id
        return null


# --- Layout: one token per object (class + quantized box), for layout-to-image (LDM Sec. 4.3.2 / App. D.3) ---


class LayoutEncoder(Conditioner):
    """τθ for layouts: token_k = E_class[c_k] + Σ_{j∈{x0,y0,x1,y1}} E_j[bin(coord_j)], then LayerNorm.

    Coordinates in [0, 1] are quantized into `box_bins` bins (bin = ⌊coord·bins⌋, 1.0 goes to the last bin).
    Padding objects (class −1) are masked out; a learned null/start token is always present, so the empty
    layout (the CFG null condition) still gives one real key. The tokens carry no order (the set of
    objects is what matters; cross-attention is permutation-invariant over keys). The reference
    tokenizes layouts as a sequence for a transformer; minildm's sum-of-embeddings is a simpler choice.
    """

    def __init__(self, num_classes: int, max_objects: int, width: int, box_bins: int = 16):
        super().__init__()
        self.num_classes, self.max_objects, self.width, self.box_bins = num_classes, max_objects, width, box_bins
        self.class_emb = nn.Embedding(num_classes, width)
        self.coord_emb = nn.ModuleList(nn.Embedding(box_bins, width) for _ in range(4))   # x0, y0, x1, y1
        self.null_token = nn.Parameter(torch.zeros(width))
        for emb in [self.class_emb, *self.coord_emb]:
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.null_token, std=0.02)
        self.norm = nn.LayerNorm(width)

    def quantize(self, coords: torch.Tensor) -> torch.Tensor:
        """Box coordinates in [0, 1] -> bin indices in 0..box_bins−1."""
        return (coords * self.box_bins).floor().long().clamp(0, self.box_bins - 1)

    def forward(self, layout: torch.Tensor) -> dict[str, torch.Tensor]:
        """layout (B, N, 5) rows [class, x0, y0, x1, y1] -> {"context": (B, 1+N, width), "context_mask": (B, 1+N)}."""
        cls_id = layout[..., 0].round().long()                                       # (B, N)
        real = cls_id >= 0                                                           # (B, N), class −1 = padding
        boxes = layout[..., 1:].float()                                              # (B, N, 4)
        bins = self.quantize(boxes)                                                  # (B, N, 4)
        tok = self.class_emb(cls_id.clamp(min=0))                                    # (B, N, D)
        for j, emb in enumerate(self.coord_emb):
            tok = tok + emb(bins[..., j])                                            # + E_j[bin(coord_j)]
        tok = tok * real[..., None]                                                  # padding rows carry nothing
        B = layout.shape[0]
        null = self.null_token.expand(B, 1, self.width)                              # (B, 1, D)
        context = self.norm(torch.cat([null, tok], dim=1))                           # (B, 1+N, D)
        mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=layout.device), real], dim=1)
        return {"context": context, "context_mask": mask}

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        """The empty layout shaped like the (B, N, 5) layouts `like`, all −1 (every object is padding)."""
        return torch.full(tuple(like.shape), -1.0, device=like.device)


# --- Low-resolution image, concatenated to z_t (super-resolution, LDM Sec. 4.4) -----------------------------


class LowResConcat(Conditioner):
    """τθ for super-resolution: the low-res image y is resized to the latent grid and concatenated to z_t.

    `factor` = latent size / low-res size (1 in the paper's ×4 SR on an f = 4 autoencoder), or `size=(h, w)`:
    the latent grid. Bilinear (align_corners=False): smooth, no blocky artefacts the U-Net must undo.
    """

    def __init__(self, factor: float = 1.0, mode: str = "bilinear"):
        super().__init__()
        self.factor, self.mode = factor, mode

    @staticmethod
    def degrade(image: torch.Tensor, sr_factor: int) -> torch.Tensor:
        """The SR training input: bicubic, antialiased ×1/sr_factor downsampling (the paper's degradation)."""
        H, W = image.shape[-2:]
        low = F.interpolate(image, size=(H // sr_factor, W // sr_factor), mode="bicubic", antialias=True,
                            align_corners=False)
        return low.clamp(-1, 1)

    def forward(self, low_res: torch.Tensor, size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """low_res (B, C, h', w') -> {"concat": (B, C, h, w)} with (h, w) = size or factor·(h', w')."""
        if size is None:
            size = (round(low_res.shape[2] * self.factor), round(low_res.shape[3] * self.factor))
        size = tuple(int(s) for s in size)
        if tuple(low_res.shape[2:]) == size:
            return {"concat": low_res}
        kwargs = {"align_corners": False} if self.mode == "bilinear" else {}
        return {"concat": F.interpolate(low_res, size=size, mode=self.mode, **kwargs)}

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        """An all-zero low-res image shaped like the given one."""
        return torch.zeros_like(like)


# --- Semantic map, concatenated to z_t (semantic synthesis, LDM Sec. 4.3.2) --------------------------------


def check_class_map(maps: torch.Tensor, num_ids: int, resolution: int | None = None) -> torch.Tensor:
    """A class map as a seg model takes it: (B, H, W) whole numbers in 0..num_ids − 1 (the classes, then
    background as the last id; H = W = `resolution` when given) -> int64, else an error that says what was expected."""
    expected = (f"a semantic map is (B, H, W) class ids 0..{num_ids - 1} (the last: background), {resolution or 'H'}x"
                f"{resolution or 'W'}, e.g. map[None] or ShapesDataset('test').batch([0])['semantic']")
    if not torch.is_tensor(maps) or maps.dim() != 3 or (resolution and maps.shape[1:] != (resolution, resolution)):
        raise ValueError(f"{expected}; got {tuple(maps.shape) if torch.is_tensor(maps) else type(maps).__name__}")
    if not torch.equal(maps, maps.round()) or maps.min() < 0 or maps.max() >= num_ids:
        raise ValueError(f"{expected}; got ids {float(maps.min()):g}..{float(maps.max()):g}")
    return maps.long()


class SemanticConcat(Conditioner):
    """τθ for semantic synthesis: a class map y (B, H, W) -> one-hot (B, K, H, W) -> the share of each class in each
    f×f patch, (B, K, h, w) on the latent grid -> concatenated to z_t (LDM Sec. 4.3.2: "downsampled maps
    concatenated to the latent"). K = the number of ids (Shapes: 24 classes + background).

    Area averaging: the reference's SpatialRescaler halves bilinearly (align_corners=False: a 2×2 average) twice,
    exactly this 4×4 average at f = 4; it keeps a star's thin tips as small shares, point sampling would drop them.
    No learned 1×1 reduction (the reference's `remap_output`): the U-Net's first convolution reads the K channels
    directly, and a 1×1 convolution in front would only factor that linear map. Id −1 (the null map): no class.
    """

    def __init__(self, num_ids: int):
        super().__init__()
        self.num_ids = num_ids

    def forward(self, maps: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """maps (B, H, W) ids in −1..K−1 -> {"concat": (B, K, h, w)}, each column the class shares of its patch."""
        maps = maps.long()
        onehot = F.one_hot(maps.clamp(min=0), self.num_ids).permute(0, 3, 1, 2).float()   # (B, K, H, W)
        onehot = onehot * (maps >= 0)[:, None]                                          # −1: no class
        return {"concat": F.interpolate(onehot, size=tuple(int(s) for s in size), mode="area")}

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        """The map of "no class anywhere" (all −1), shaped like the given one."""
        return torch.full_like(like, -1)


# --- Inpainting masks (LDM Sec. 4.5): which pixels to fill ----------------------------------------------------
# Convention: a mask is (B, 1, H, W) with 1 = the hole (pixels to fill) and 0 = known pixels, as in the paper's
# inpainting setup (the masked image is x·(1 − m), the hole mid-grey in [−1, 1]).

MASK_KINDS = ("box", "object")      # `minildm sample --mask`: half an object's box, or the whole object
# a training box's side, as a fraction of the image side (random boxes cover parts of objects, background, or both)
BOX_SIDES = (0.25, 0.6)


def check_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """A mask as the models take it -> (B, 1, H, W) float32 of 0 (known) / 1 (hole), one per image of `images`
    (B, 3, H, W); every row must hold something to fill and something known."""
    B, _, H, W = images.shape
    mask = torch.as_tensor(mask)
    mask = mask[:, None] if mask.dim() == 3 else mask                           # (B, H, W) -> (B, 1, H, W)
    if tuple(mask.shape) != (B, 1, H, W):
        raise ValueError(f"the mask must be (B, 1, H, W) = ({B}, 1, {H}, {W}) or (B, H, W), one per image, 1 marking "
                         f"the hole (pixels to fill), 0 the known pixels; got shape {tuple(mask.shape)}")
    m = mask.float()
    holes = m.flatten(1).sum(1)                                                  # hole pixels per row
    if not bool(((m == 0) | (m == 1)).all() & (holes > 0).all() & (holes < H * W).all()):
        raise ValueError(f"mask values must be 0 or 1 (threshold a soft mask: (mask > 0.5).float()), each row with "
                         f"a hole and known pixels (all hole is sampling: call sample()); got values in ["
                         f"{float(m.min()):g}, {float(m.max()):g}], hole pixels per row {holes[:8].tolist()}/{H * W}")
    return m


def object_mask(segmentation: torch.Tensor, k: torch.Tensor | Sequence[int], dilate: int = 1) -> torch.Tensor:
    """(B, H, W) segmentation, object index k per row (0-based: pixels where segmentation == k + 1) -> (B, 1, H, W)
    masks, grown by `dilate` pixels: the renderer gives a pixel to an object only when it covers half of it, so the
    antialiased rim just outside would leave a thin outline of the removed object's color."""
    k = torch.as_tensor(k, device=segmentation.device).long().view(-1, 1, 1)
    m = (segmentation == k + 1).float()[:, None]
    return F.max_pool2d(m, 2 * dilate + 1, 1, dilate) if dilate else m


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


# --- Masked image and mask, concatenated to z_t (inpainting, LDM Sec. 4.5) ----------------------------------


class InpaintConcat(Conditioner):
    """τθ for inpainting: raw y = [x·(1 − m), m] (B, 4, H, W), m = 1 in the hole -> {"concat": [E(x·(1 − m))·scale,
    m↓]} (B, c + 1, h, w), concatenated to z_t (LDM Sec. 4.5: the masked image's latent and the mask).

    The masked image is encoded by the LDM's own frozen autoencoder (`encode`, passed in, so neither trained nor
    stored twice) to the posterior mean × scale: deterministic, as the reference's VQ autoencoder. m↓ is the
    share of hole pixels in each f×f patch (latent_mask(mode="area")): the hole's outline, not just a yes/no.
    """

    @staticmethod
    def raw(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images and (B, 1, H, W) 0/1 masks -> the raw condition [x·(1 − m), m] (B, 4, H, W)."""
        return torch.cat([images * (1 - mask), mask], dim=1)

    def forward(self, raw: torch.Tensor, encode) -> dict[str, torch.Tensor]:
        """raw (B, 4, H, W) -> {"concat": (B, c + 1, h, w)}; encode: image -> scaled latent (B, c, h, w)."""
        z = encode(raw[:, :3])                                                        # (B, c, h, w)
        m = latent_mask(raw[:, 3:].float(), tuple(z.shape[-2:]), "area")                # (B, 1, h, w) hole share
        return {"concat": torch.cat([z.to(m.dtype), m], dim=1)}

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(like)


# --- The tokenizer in front of the text encoder τθ (LDM Sec. 3.3, 4.3.1) ----------------------------------


class WordTokenizer:
    """Word-level tokenizer: a caption -> [<bos>, w1, …, wn, <eos>, <pad>, …] with <pad> = 0, <bos> = 1, <eos> = 2,
    then `words` in the given order; punctuation dropped, case ignored. An unknown word or a caption that is too
    long is an error naming it (showing `examples`). Stored in a checkpoint as its word list (`to_dict`). The
    paper's BERT tokenizer would plug in through the attributes the encoder reads: vocab_size, context_length,
    pad_id / bos_id / eos_id.
    """

    PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"

    def __init__(self, words: Sequence[str], context_length: int, examples: Sequence[str] = ()):
        self.vocab = [self.PAD, self.BOS, self.EOS] + list(words)   # distinct words, none of them a special token
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
        self.context_length = int(context_length)
        self.examples = tuple(examples)
        self._cache: dict[str, list[int]] = {}  # captions repeat; encoding is then a dict lookup

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def words(self, text: str) -> list[str]:
        """Lower-case words of `text`, punctuation dropped."""
        return re.sub(r"[.,!?;:]", " ", text.lower()).split()

    def encode(self, text: str) -> torch.Tensor:
        """Caption -> (context_length,) int64 ids; unknown words are an error naming them."""
        return torch.tensor(self._ids(text), dtype=torch.int64)

    def encode_batch(self, texts: Sequence[str]) -> torch.Tensor:
        """list of captions -> (B, context_length) int64."""
        return torch.tensor([self._ids(t) for t in texts], dtype=torch.int64).reshape(-1, self.context_length)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """ids -> caption, dropping <pad>/<bos>/<eos>."""
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        return " ".join(self.vocab[i] for i in ids if i > self.eos_id)

    def _ids(self, text: str) -> list[int]:
        if text in self._cache:
            return self._cache[text]
        words = self.words(text)
        unknown = sorted({w for w in words if w not in self.index or w in (self.PAD, self.BOS, self.EOS)})
        if unknown:
            hint = f" Example prompts: {', '.join(map(repr, self.examples))}." if self.examples else ""
            raise ValueError(f"unknown word(s) {unknown} in prompt {text!r}. The vocabulary is: "
                             f"{', '.join(self.vocab[3:])}.{hint}")
        if len(words) + 2 > self.context_length:
            raise ValueError(f"prompt {text!r} has {len(words)} words; at most {self.context_length - 2} fit")
        ids = [self.bos_id] + [self.index[w] for w in words] + [self.eos_id]
        ids += [self.pad_id] * (self.context_length - len(ids))
        if len(self._cache) < 100_000:
            self._cache[text] = ids
        return ids

    def to_dict(self) -> dict:
        """What a checkpoint stores to rebuild this tokenizer exactly (same words, same ids)."""
        return {"words": self.vocab[3:], "context_length": self.context_length, "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, d: dict) -> "WordTokenizer":
        return cls(d["words"], d["context_length"], d.get("examples", ()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, context_length={self.context_length})"
