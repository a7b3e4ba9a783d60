"""The user-facing API: rank/score/top_k/batch, long lists, and clear errors on bad input."""

from __future__ import annotations

import pytest

from headrank.engine.backbone import BackboneError, load_backbone, resolve_source
from headrank.ranker import HeadRanker, RankerConfig

from .conftest import DOCS, FLEA_QUERY


def test_rank_returns_sorted_results_with_ids(lexical):
    ranker = HeadRanker(lexical)
    ranked = ranker.rank(FLEA_QUERY, DOCS, doc_ids=["a", "b", "c", "d", "e"])
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5]
    assert ranked[0].doc_id == "c" and ranked[0].document == DOCS[2]
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    assert ranked.top_k(2) == ranked.results[:2]
    scores = ranker.score(FLEA_QUERY, DOCS)
    assert scores[ranked[0].index] == pytest.approx(ranked[0].score)


def test_documents_as_mappings_and_batch(lexical):
    ranker = HeadRanker(lexical)
    docs = [{"text": d, "title": ""} for d in DOCS]
    batch = ranker.rank_batch([(FLEA_QUERY, docs), ("what is wifi", DOCS, list("abcde"))], progress=False)
    assert batch[0][0].index == 2
    assert batch[1][0].doc_id in {"a", "e"}


def test_empty_list_gives_empty_result(tiny):
    assert len(HeadRanker(tiny).rank(FLEA_QUERY, [])) == 0
    assert HeadRanker(tiny).score(FLEA_QUERY, []) == []


@pytest.mark.parametrize("query", ["", "   ", "\u00a0", "\u200b\u2060", "\x00", "\ufeff \t"])
def test_empty_query_is_refused(tiny, query):
    """The server's rule (results.INVISIBLE): whitespace, control and zero-width characters hold nothing."""
    with pytest.raises(ValueError, match="query is empty"):
        HeadRanker(tiny).rank(query, DOCS)


def test_bad_documents_are_refused(tiny):
    with pytest.raises(TypeError, match="document 1 must be a string"):
        HeadRanker(tiny).rank(FLEA_QUERY, ["ok", 42])
    with pytest.raises(TypeError, match="query must be a string"):
        HeadRanker(tiny).rank(None, DOCS)
    with pytest.raises(ValueError, match="2 doc_ids for 5 documents"):
        HeadRanker(tiny).rank(FLEA_QUERY, DOCS, doc_ids=["a", "b"])


def test_list_longer_than_the_context_is_windowed(lexical):
    docs = [d for d in DOCS if "fleas" not in d] * 10 + [DOCS[2]]
    whole = HeadRanker(lexical)
    windowed = HeadRanker(lexical, RankerConfig(max_length=300))
    windows = windowed.score_lists(FLEA_QUERY, docs)
    assert len(windows) > 1 and sorted(sum((w for w, _ in windows), [])) == list(range(len(docs)))
    assert whole.rank(FLEA_QUERY, docs)[0].index == 40
    assert windowed.rank(FLEA_QUERY, docs)[0].index == 40


def test_unknown_models_are_refused(tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        load_backbone(str(tmp_path / "nope.gguf"))
    with pytest.raises(BackboneError, match="not found"):
        load_backbone(str(tmp_path / "no" / "such" / "folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(str(tmp_path / "empty"))
    with pytest.raises(BackboneError, match="unknown model"):
        resolve_source("not-a-model")
    assert resolve_source("Qwen/Qwen3-0.6B") == ("hub", None)


def test_load_from_a_local_folder(tmp_path):
    from headrank.engine.testing import save_tiny

    folder = save_tiny(tmp_path / "tiny")
    ranker = HeadRanker.from_pretrained(folder, heads="0-1,1-2")
    assert ranker.depth == 2 and ranker.backbone.fingerprint.startswith("folder:")
    assert len(ranker.rank(FLEA_QUERY, DOCS)) == 5


def test_a_cut_depth_loads_quietly_but_a_broken_checkpoint_is_reported(tmp_path, caplog):
    import logging
    import re

    from safetensors.torch import load_file, save_file

    from headrank.engine.testing import save_tiny

    folder = save_tiny(tmp_path / "tiny")  # 4 layers
    transformers_log = logging.getLogger("transformers.modeling_utils")  # transformers does not propagate
    transformers_log.addHandler(caplog.handler)
    try:
        backbone = load_backbone(str(folder), dtype="float32", depth=2)
        assert len(backbone.model.model.layers) == 2
        assert "LOAD REPORT" not in caplog.text  # layers 2-3 were left out on purpose
        weights = load_file(folder / "model.safetensors")
        del weights["model.layers.0.self_attn.q_proj.weight"]
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        load_backbone(str(folder), dtype="float32", depth=2)
    finally:
        transformers_log.removeHandler(caplog.handler)
    assert "LOAD REPORT" in caplog.text
    assert re.search(r"model\.layers\.0\.self_attn\.q_proj\.weight +\| MISSING", caplog.text)
