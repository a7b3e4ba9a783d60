"""Frozen passage passes computed once and reused: with query-span adapters the passages are encoded by the
frozen base, so a (list, order)'s keys and values never change during training, and neither do the reference
scores. Kept on the host (never on the accelerator), in the model's dtype unless asked otherwise, within a
memory bound; a folder, when given, keeps every one for later runs on the same base."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from headrank.engine.prompt import ListwisePrompt
from headrank.engine.scoring import PrefixBatch
from headrank.ranker import HeadRanker

DEFAULT_MEMORY_BYTES = 4 << 30
"""host memory the store may hold before it evicts the least recently used prefix (to recompute or reload it)."""


def prefix_key(prompt: ListwisePrompt) -> str:
    return hashlib.sha1(np.asarray(prompt.prefix_ids, dtype=np.int64).tobytes()).hexdigest()


class PrefixStore:
    """`get(prompt)` returns the frozen prefix of `prompt` on the model's device and in its dtype, computing it
    at most once while it stays in memory or in the folder."""

    def __init__(
        self,
        ranker: HeadRanker,
        dtype: str = "model",
        folder: Path | None = None,
        max_bytes: int = DEFAULT_MEMORY_BYTES,
    ):
        self.ranker = ranker
        self.dtype = ranker.family.dtype if dtype == "model" else getattr(torch, dtype)
        self.folder = None
        if folder is not None:  # one folder per base and depth: prefixes do not depend on the heads
            name = str(self.dtype).removeprefix("torch.")
            tag = f"{ranker.backbone.fingerprint.replace(':', '-')[:40]}-d{ranker.depth}-{name}"
            self.folder = Path(folder) / tag
            self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.memory: OrderedDict[str, PrefixBatch] = OrderedDict()
        self.bytes = 0
        self.computed = 0

    def get(self, prompt: ListwisePrompt) -> PrefixBatch:
        key = prefix_key(prompt)
        stored = self.memory.get(key)
        if stored is not None:
            self.memory.move_to_end(key)
        else:
            if self.folder is not None and (self.folder / f"{key}.safetensors").is_file():
                stored = self._load(key)
            else:
                with torch.no_grad():
                    stored = self.ranker.encode([prompt]).to("cpu", self.dtype)
                self.computed += 1
                if self.folder is not None:
                    self._save(key, stored)
            self._remember(key, stored)
        return stored.to(self.ranker.family.device, self.ranker.family.dtype)

    def _remember(self, key: str, stored: PrefixBatch) -> None:
        self.memory[key] = stored
        self.bytes += _nbytes(stored)
        while self.bytes > self.max_bytes and len(self.memory) > 1:
            _, dropped = self.memory.popitem(last=False)
            self.bytes -= _nbytes(dropped)

    def _save(self, key: str, stored: PrefixBatch) -> None:
        from safetensors.torch import save_file

        tensors = {f"{kind}{i}": t.contiguous() for i, kv in enumerate(stored.kv) for kind, t in zip("kv", kv)}
        partial = self.folder / f"{key}.partial"
        save_file(tensors, partial)
        partial.rename(self.folder / f"{key}.safetensors")  # never a half-written file under the real name

    def _load(self, key: str) -> PrefixBatch:
        from safetensors.torch import load_file

        tensors = load_file(self.folder / f"{key}.safetensors")
        kv = [(tensors[f"k{i}"], tensors[f"v{i}"]) for i in range(len(tensors) // 2)]
        return PrefixBatch(kv, [kv[0][0].shape[2]])


def _nbytes(batch: PrefixBatch) -> int:
    return sum(t.numel() * t.element_size() for kv in batch.kv for t in kv)
