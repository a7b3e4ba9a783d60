"""Convert a GGUF file once, tensor by tensor, into safetensors shards in the dtype it will run in.

transformers' own GGUF load dequantizes every tensor to float32 at once (1.3-2x the float32 model at its peak);
here one tensor at a time is dequantized, given the same per-tensor processing transformers applies (its
TensorProcessor classes and name map, reused), cast, and written into a shard of at most `SHARD_BYTES`, so the
peak stays near one shard plus one tensor. Loading the shards later reads only the layers a depth keeps."""

from __future__ import annotations

import json
import logging
import math
import mmap
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SHARD_BYTES = 512 << 20
INDEX = "model.safetensors.index.json"
_LAYER = re.compile(r"(?:^|\.)(?:blk|layers)\.(\d+)\.")


class MemoryShortage(ValueError):
    """The weights a load keeps do not fit in the memory the system says is available."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's name (GGUF or transformers), element count and, for layer weights, its layer."""

    name: str
    numel: int

    @property
    def layer(self) -> int | None:
        match = _LAYER.search(self.name)
        return None if match is None else int(match.group(1))


def kept_bytes(tensors: Iterable[TensorInfo], itemsize: int, depth: int | None) -> int:
    """Bytes of the weights a load keeps: every tensor outside the layers, and the layers below `depth`."""
    return sum(t.numel * itemsize for t in tensors if depth is None or t.layer is None or t.layer < depth)


def mem_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file: the check is skipped)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def check_fits(need: int, what: str, available: int | None = None) -> None:
    """Refuse before reading weights that cannot fit, instead of being killed by the kernel halfway."""
    available = mem_available() if available is None else available
    if available is not None and need > available:
        raise MemoryShortage(
            f"{what} needs {need / 2**30:.2f} GiB of memory for its weights but {available / 2**30:.2f} GiB is "
            "available (MemAvailable): keep fewer layers (a head set or --depth cuts them), use --dtype bfloat16, "
            "free memory, or choose a smaller model"
        )


def gguf_tensors(path: Path) -> list[TensorInfo]:
    """The GGUF's tensors from its header alone (the reader memory-maps the file and reads no weights)."""
    from gguf import GGUFReader

    return [TensorInfo(t.name, int(t.n_elements)) for t in GGUFReader(path).tensors]


def cached_tensors(folder: Path) -> list[TensorInfo]:
    """The converted shards' tensors, from the safetensors headers alone."""
    from safetensors import safe_open

    tensors = []
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensors.append(TensorInfo(name, math.prod(fh.get_slice(name).get_shape())))
    return tensors


def conversion_bytes(tensors: list[TensorInfo], itemsize: int) -> int:
    """Peak of a conversion: one shard being filled, plus the largest tensor dequantized (float32, and a copy)."""
    largest = max((t.numel for t in tensors), default=0)
    return min(SHARD_BYTES, sum(t.numel for t in tensors) * itemsize) + largest * (2 * 4 + itemsize)


def convert(path: Path, target: Path, dtype: torch.dtype) -> None:
    """Write `target` (config, tokenizer, safetensors shards in `dtype`) from the GGUF at `path`, atomically."""
    from transformers import AutoConfig, AutoTokenizer

    log.info("converting %s once, tensor by tensor, into %s (%s)", path, target, dtype)
    tmp = target.with_name(target.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for stale in tmp.iterdir():
        stale.unlink()
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    weight_map = _write_shards(path, config, tmp, dtype)
    total = sum((tmp / shard).stat().st_size for shard in set(weight_map.values()))
    (tmp / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(tmp)
    tmp.rename(target)


def _write_shards(path: Path, config, folder: Path, dtype: torch.dtype) -> dict[str, str]:
    """Dequantize, process and cast one tensor at a time, as transformers' `load_gguf_checkpoint` does for all."""
    from gguf import GGUFReader, dequantize
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        read_field,
    )

    reader = GGUFReader(path)
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config.to_dict())
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    names = get_gguf_hf_weights_map(skeleton, processor)
    parsed = {"tensors": {}}  # where the mixture-of-experts processors assemble expert tensors across calls
    shards = _Shards(folder)
    for tensor in reader.tensors:
        weights = dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(
            weights=weights, name=tensor.name, tensor_key_mapping=names, parsed_parameters=parsed
        )
        if result.name in names:
            shards.add(names[result.name], _torch(result.weights).to(dtype))
        del weights, result
        _release_pages(reader)
    for name, assembled in parsed["tensors"].items():
        shards.add(name, assembled.to(dtype))
    return shards.close()


def _torch(weights: np.ndarray) -> torch.Tensor:
    """The tensor transformers makes of `weights` (`np.copy`), copying only what is a view of the mapped file."""
    if weights.flags.writeable:
        return torch.from_numpy(np.ascontiguousarray(weights))
    return torch.from_numpy(np.copy(weights))


def _release_pages(reader) -> None:
    """Drop the file pages read so far from this process's memory: they count in its RSS and are re-readable."""
    mapped = getattr(reader.data, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


class _Shards:
    """Collects tensors and writes a safetensors file whenever `SHARD_BYTES` are held."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.held: dict[str, torch.Tensor] = {}
        self.size = 0
        self.weight_map: dict[str, str] = {}

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.held[name] = tensor.contiguous()
        self.size += tensor.numel() * tensor.element_size()
        if self.size >= SHARD_BYTES:
            self._flush()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self.held:
            return
        shard = f"model-{len(set(self.weight_map.values())) + 1:05d}.safetensors"
        save_file(self.held, self.folder / shard, metadata={"format": "pt"})
        self.weight_map.update(dict.fromkeys(self.held, shard))
        self.held, self.size = {}, 0

    def close(self) -> dict[str, str]:
        self._flush()
        return self.weight_map
