"""Scores pinned as computed by the code before the training/structure rewrite (commit 67a5646), so a refactor
that changes any score shows here. float.hex keeps every bit, and on the machine that pinned them they held bit
for bit; another CPU's kernels round the last bits differently (an AMD EPYC with AVX512-BF16 differs by 9e-8 on
scores of 0.3), so the check is the order exactly and every score within 1e-5 of the list's largest."""

from __future__ import annotations

import pytest

from headrank.engine.testing import tiny_backbone
from headrank.heads.headset import HeadSet
from headrank.ranker import HeadRanker, RankerConfig

from .conftest import DOCS, FLEA_QUERY

TINY = {
    "tiny_icr": [
        "-0x1.5c18be0000000p-2",
        "-0x1.4ba5460000000p-2",
        "-0x1.f13d360000000p-3",
        "-0x1.b500980000000p-4",
        "-0x1.c398640000000p-4",
    ],
    "tiny_subset": [
        "-0x1.64cba00000000p-4",
        "-0x1.3453ee0000000p-4",
        "-0x1.0f55e00000000p-4",
        "-0x1.376c380000000p-5",
        "-0x1.e48bd00000000p-7",
    ],
    "tiny_windows": [
        "-0x1.4f2aea0000000p-2",
        "-0x1.5366e80000000p-2",
        "-0x1.edef700000000p-3",
        "-0x1.1bb2760000000p-2",
        "-0x1.bf8f620000000p-3",
    ],
    "tiny_tournament": [
        "-0x1.11bf77e000000p-2",
        "-0x1.5366e40000000p-2",
        "-0x1.e1faf7c000000p-3",
        "-0x1.5b3861c000000p-3",
        "-0x1.6438ec0000000p-7",
    ],
}
"""`tiny_windows` is the scaled merge of two windows (the default until the tournament); `tiny_tournament` the
same list under the tournament, pinned when it was written (commit on branch long-lists)."""

EMBEDDED_DL19_QID = "264014"
EMBEDDED = {
    "embedded_artifact": [
        "0x1.6b5e340000000p+1",
        "0x1.0f788e0000000p+0",
        "0x1.c8ecfe0000000p-2",
        "0x1.611e160000000p-2",
        "0x1.681d560000000p-1",
        "0x1.e0151e0000000p-2",
        "0x1.b226080000000p-3",
        "0x1.f607e40000000p-3",
        "0x1.5f22680000000p-4",
        "0x1.f736360000000p-5",
        "0x1.41c5dc0000000p-3",
        "0x1.7f0cc60000000p-3",
        "0x1.2842740000000p-4",
        "-0x1.210d5c0000000p-7",
        "-0x1.415d840000000p-5",
        "0x1.34816c0000000p-6",
        "-0x1.055baa0000000p-8",
        "0x1.251b2a0000000p-2",
        "0x1.27e14a0000000p-3",
        "0x1.b2e3a60000000p-3",
    ],
    "embedded_subset": [
        "0x1.1efa740000000p+2",
        "0x1.86c2ec0000000p+0",
        "0x1.46101c0000000p-1",
        "0x1.e2c6a40000000p-2",
        "0x1.bdf40e0000000p-1",
        "0x1.2264220000000p-1",
        "0x1.ed98140000000p-3",
        "0x1.15ba9c0000000p-2",
        "0x1.8924b20000000p-4",
        "0x1.a211340000000p-5",
        "0x1.3534520000000p-3",
        "0x1.8a15aa0000000p-3",
        "0x1.41cfc60000000p-4",
        "0x1.59d8680000000p-8",
        "-0x1.b4f3680000000p-6",
        "0x1.3534900000000p-6",
        "0x1.2524e20000000p-8",
        "0x1.35d66c0000000p-2",
        "0x1.20f3520000000p-3",
        "0x1.b74ea80000000p-3",
    ],
}


def _assert_pinned(scores: list[float], pinned: list[str]) -> None:
    want = [float.fromhex(h) for h in pinned]
    scale = max(abs(w) for w in want)
    assert sorted(range(len(want)), key=lambda i: -want[i]) == sorted(range(len(scores)), key=lambda i: -scores[i])
    assert scores == pytest.approx(want, rel=0, abs=1e-5 * scale)


def test_tiny_scores_are_unchanged():
    """A list that fits one window scores as it always did, through `score`, `rank` and `rank_batch` alike."""
    ranker = HeadRanker(tiny_backbone(), RankerConfig())
    _assert_pinned(ranker.score(FLEA_QUERY, DOCS), TINY["tiny_icr"])
    ranked = ranker.rank_batch([(FLEA_QUERY, DOCS), ("what is wifi", DOCS[:2])], progress=False)[0]
    _assert_pinned([r.score for r in sorted(ranked, key=lambda r: r.index)], TINY["tiny_icr"])
    assert (ranked.windows, ranked.prompts) == (1, 1)
    for merge in ("sliding", "tournament", "scaled"):  # a list of one window is one prompt whatever the merge
        _assert_pinned(HeadRanker(tiny_backbone(), RankerConfig(merge=merge)).score(FLEA_QUERY, DOCS), TINY["tiny_icr"])
    subset = RankerConfig(heads=HeadSet.of([(0, 1), (1, 0), (2, 3)]))
    _assert_pinned(HeadRanker(tiny_backbone(), subset).score(FLEA_QUERY, DOCS), TINY["tiny_subset"])
    scaled = HeadRanker(tiny_backbone(), RankerConfig(max_length=150, merge="scaled"))
    assert len(scaled.prompts(FLEA_QUERY, DOCS)) > 1
    _assert_pinned(scaled.score(FLEA_QUERY, DOCS), TINY["tiny_windows"])
    tournament = HeadRanker(tiny_backbone(), RankerConfig(max_length=150, merge="tournament"))
    assert tournament.rank(FLEA_QUERY, DOCS).prompts == 3  # two windows and the final one
    _assert_pinned(tournament.score(FLEA_QUERY, DOCS), TINY["tiny_tournament"])


@pytest.mark.slow
def test_embedded_scores_are_unchanged(data_dir):
    """The committed artifact and the selected heads on the embedded model, DL19's first judged top-20."""
    from pathlib import Path

    from headrank.artifact import PREVIOUS_ARTIFACT
    from headrank.datasets import load_dataset

    lst = load_dataset("dl19", data_dir).judged()[0].head(20)
    assert lst.qid == EMBEDDED_DL19_QID
    heads = Path(__file__).resolve().parents[1] / "docs" / "headrank" / "heads-selected.json"
    artifact = HeadRanker.from_pretrained(PREVIOUS_ARTIFACT, dtype="float32")
    _assert_pinned(artifact.score(lst.query, lst.documents()), EMBEDDED["embedded_artifact"])
    subset = HeadRanker.from_pretrained("embedded", heads=str(heads), dtype="float32")
    _assert_pinned(subset.score(lst.query, lst.documents()), EMBEDDED["embedded_subset"])
