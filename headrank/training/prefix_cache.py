"""Frozen passage passes computed once and reused: with query-span adapters the passages are encoded by the
frozen base, so a (list, order)'s keys and values never change during training, and neither do the reference
scores. Kept in a compact dtype in memory, or in a folder that later runs on the same base share."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from headrank.prompt import ListwisePrompt
from headrank.ranker import HeadRanker
from headrank.scoring import PrefixCache


def prefix_key(prompt: ListwisePrompt) -> str:
    return hashlib.sha1(np.asarray(prompt.prefix_ids, dtype=np.int64).tobytes()).hexdigest()


class PrefixStore:
    """`get(prompt)` returns the frozen prefix of `prompt` in the model's dtype, computing it at most once."""

    def __init__(self, ranker: HeadRanker, dtype: str = "float16", folder: Path | None = None):
        self.ranker = ranker
        self.dtype = getattr(torch, dtype)
        self.folder = None
        if folder is not None:  # one folder per base and depth: prefixes do not depend on the heads
            tag = f"{ranker.backbone.fingerprint.replace(':', '-')[:40]}-d{ranker.depth}-{dtype}"
            self.folder = Path(folder) / tag
            self.folder.mkdir(parents=True, exist_ok=True)
        self.memory: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.computed = 0

    def get(self, prompt: ListwisePrompt) -> PrefixCache:
        key = prefix_key(prompt)
        stored = self.memory.get(key)
        if stored is None and self.folder is not None and (self.folder / f"{key}.safetensors").is_file():
            stored = self._load(key)
        if stored is None:
            with torch.no_grad():
                fresh = self.ranker.encode(prompt)
            stored = [(k.to(self.dtype), v.to(self.dtype)) for k, v in fresh]
            self.computed += 1
            if self.folder is not None:
                self._save(key, stored)
        if self.folder is None:
            self.memory[key] = stored
        model_dtype = self.ranker.model.model.embed_tokens.weight.dtype
        return [(k.to(model_dtype), v.to(model_dtype)) for k, v in stored]

    def _save(self, key: str, stored) -> None:
        from safetensors.torch import save_file

        tensors = {f"{kind}{i}": t.contiguous() for i, kv in enumerate(stored) for kind, t in zip("kv", kv)}
        partial = self.folder / f"{key}.partial"
        save_file(tensors, partial)
        partial.rename(self.folder / f"{key}.safetensors")  # never a half-written file under the real name

    def _load(self, key: str):
        from safetensors.torch import load_file

        tensors = load_file(self.folder / f"{key}.safetensors")
        return [(tensors[f"k{i}"], tensors[f"v{i}"]) for i in range(len(tensors) // 2)]
