"""Text to token ids: the word-level tokenizer in front of the text encoder τθ (LDM Sec. 3.3, 4.3.1).

A caption becomes a fixed-length row of integers, [<bos>, w1, …, wn, <eos>, <pad>, …]. The vocabulary is a
plain list of words, so a tokenizer is stored in a checkpoint as that list (`to_dict`) and rebuilt from it
(`from_dict`) without knowing which dataset it came from. The Shapes dataset builds one from its caption
grammar (`shapes.ShapesTokenizer`); the paper's text model uses a BERT tokenizer instead, which would plug in
through the same four attributes the encoder reads: vocab_size, context_length, pad_id / bos_id / eos_id.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

__all__ = ["WordTokenizer"]


class WordTokenizer:
    """Word-level tokenizer: <pad> = 0, <bos> = 1, <eos> = 2, then `words` in the given order.

    `encode` gives a (context_length,) int64 row; punctuation is dropped and case ignored. An unknown word or a
    caption that is too long is an error naming it. `examples` are shown in those errors.
    """

    PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"

    def __init__(self, words: Sequence[str], context_length: int, examples: Sequence[str] = ()):
        words = list(words)
        if len(set(words)) != len(words) or any(w in (self.PAD, self.BOS, self.EOS) for w in words):
            raise ValueError("tokenizer words must be distinct and must not include <pad>, <bos> or <eos>")
        if context_length < 3:
            raise ValueError(f"context_length must be ≥ 3 (<bos>, one word, <eos>), got {context_length}")
        self.vocab = [self.PAD, self.BOS, self.EOS] + words
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
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a list of strings; use encode() for a single caption")
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
            examples = "".join(f" Example prompts: {', '.join(repr(e) for e in self.examples)}." if self.examples
                               else "")
            raise ValueError(f"unknown word(s) {unknown} in prompt {text!r}. The vocabulary is: "
                             f"{', '.join(self.vocab[3:])}.{examples}")
        if len(words) + 2 > self.context_length:
            raise ValueError(f"prompt {text!r} has {len(words)} words; at most {self.context_length - 2} fit "
                             f"(context_length={self.context_length} incl. <bos>/<eos>)")
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
