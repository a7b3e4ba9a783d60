"""HeadRank as a PyTerrier transformer (`pip install 'headrank[pyterrier]'`): `bm25 >> HeadRankReranker() % 10`.

It reranks a result frame (qid, query, docno, text[, title][, score, rank]) the way `headrank eval` reranks a
candidate list (`experiment.rerank_lists`: the prompts of all queries batched by the engine, the first
stage's rows beyond `top_k` kept below in their order), so `pt.Experiment` and `headrank eval` agree."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyterrier as pt

from headrank.data import Candidate, CandidateList
from headrank.ranker import HeadRanker


class HeadRankReranker(pt.Transformer):
    """R -> R: rerank each query's top `top_k` rows (None: all) with a HeadRanker; `score` and `rank` are
    rewritten (the scores encode the new order exactly, as in `headrank eval`'s runs). `highlights=True` adds a
    `highlights` column: each reranked row's [(start, end, weight)] sentences, heaviest first, by character
    offsets into its text (title, newline, text when it has a title); None below `top_k`. One more pass."""

    def __init__(
        self,
        ranker: HeadRanker | str | Path | None = None,
        *,
        top_k: int | None = None,
        verbose: bool = False,
        highlights: bool = False,
        **options,
    ):
        if ranker is None or isinstance(ranker, str | Path):
            from headrank.artifact import is_artifact
            from headrank.methods import load_method, method_for
            from headrank.options import RankerOptions

            name = str(ranker or "embedded")
            field = "artifact" if is_artifact(name) else "model"
            given = {*options, *([field] if field == "artifact" or name != "embedded" else [])}
            chosen = RankerOptions(**{field: name}, **options, given=frozenset(given))
            ranker = load_method(method_for(chosen), chosen)
        elif options:
            raise ValueError(f"options {sorted(options)} are for a ranker given by name; this one is loaded")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.ranker, self.top_k, self.verbose, self.highlights = ranker, top_k, verbose, highlights

    def __repr__(self) -> str:
        return f"HeadRankReranker({self.ranker.backbone.source!r}, top_k={self.top_k})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        from headrank.evaluation.experiment import rerank_lists

        missing = {"qid", "query", "docno", "text"} - set(inp.columns)
        if missing:
            raise ValueError(
                f"HeadRankReranker needs the columns qid, query, docno and text; missing {sorted(missing)} "
                "(add the text with pt.text.get_text(index, 'text') before it)"
            )
        if inp.empty:
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        frame = _first_stage_order(inp)
        if frame.duplicated(["qid", "docno"]).any():
            raise ValueError("a docno appears twice for one qid: each row must be one candidate of its query")
        lists = []
        for qid, rows in frame.groupby("qid", sort=False):
            titles = rows["title"] if "title" in rows else [None] * len(rows)
            candidates = [
                Candidate(str(docno), str(text), None if pd.isna(title) else str(title))
                for docno, text, title in zip(rows["docno"], rows["text"], titles)
            ]
            lists.append(CandidateList(str(qid), str(rows["query"].iloc[0]), candidates))
        top_k = self.top_k or max(len(x.candidates) for x in lists)
        run, _ = rerank_lists(self.ranker, lists, top_k, self.verbose)
        new = pd.DataFrame(
            [(qid, docno, score, rank) for qid, items in run.items() for rank, (docno, score) in enumerate(items)],
            columns=["qid", "docno", "score", "rank"],
        )
        keys = frame.assign(qid=frame["qid"].astype(str), docno=frame["docno"].astype(str))
        out = keys.drop(columns=["score", "rank"], errors="ignore").merge(new, on=["qid", "docno"], how="inner")
        if self.highlights:
            spans = self._spans([lst.head(top_k) for lst in lists])
            out["highlights"] = [spans.get(key) for key in zip(out["qid"], out["docno"])]
        return out.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)

    def _spans(self, lists: list[CandidateList]) -> dict[tuple[str, str], list[tuple[int, int, float]]]:

        return {
            (lst.qid, c.docid): [(h.start, h.end, h.weight) for h in found]
            for lst in lists
            for c, found in zip(lst.candidates, self.ranker.evidence_spans(lst.query, lst.documents()))
        }


def _first_stage_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Each query's rows best first as the first stage gave them: by rank, else by score, else as they come."""
    if "rank" in frame:
        return frame.sort_values(["qid", "rank"], kind="stable")
    if "score" in frame:
        return frame.sort_values(["qid", "score"], ascending=[True, False], kind="stable")
    return frame


def result_frame(lists: list[CandidateList]) -> pd.DataFrame:
    """Candidate lists (e.g. `headrank.datasets.load_dataset(...).judged()`) as a PyTerrier result frame."""
    rows = [
        {
            "qid": lst.qid,
            "query": lst.query,
            "docno": c.docid,
            "text": c.text,
            "title": c.title or "",
            "score": float(c.score) if c.score is not None else float(len(lst.candidates) - rank),
            "rank": rank,
        }
        for lst in lists
        for rank, c in enumerate(lst.candidates)
    ]
    return pd.DataFrame(rows, columns=["qid", "query", "docno", "text", "title", "score", "rank"])


def qrels_frame(qrels: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Judgements as PyTerrier takes them (qid, docno, label)."""
    rows = [(qid, docno, grade) for qid, judged in qrels.items() for docno, grade in judged.items()]
    return pd.DataFrame(rows, columns=["qid", "docno", "label"])
