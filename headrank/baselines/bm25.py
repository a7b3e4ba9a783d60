"""First-stage retrieval with bm25s: index a BEIR-style corpus, save/load the index, write top-k candidates.

Defaults are the BEIR settings our SciFact candidates were made with (k1 0.9, b 0.4, Lucene BM25, English
Snowball stemming and stopwords, title + text), so `headrank retrieve` reproduces them (NDCG@10 0.676).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from headrank.data import DataError, RankedRun, candidate_lists, write_candidates, write_run

CONFIG_FILE = "headrank-bm25.json"


@dataclass(frozen=True)
class BM25Config:
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"
    """a PyStemmer (Snowball) language, or None for no stemming."""
    stopwords: str | None = "en"


def _require_bm25s():
    try:
        import bm25s
    except ImportError as err:
        raise DataError("BM25 retrieval needs bm25s and PyStemmer: pip install 'headrank[retrieve]'") from err
    return bm25s


class BM25Retriever:
    """A bm25s index over a corpus whose documents keep their ids; `search` returns (docid, score) best first."""

    def __init__(self, index, docids: Sequence[str], config: BM25Config):
        self.index = index
        self.docids = list(docids)
        self.config = config
        self._stemmer = None
        if config.stemmer:
            import Stemmer

            self._stemmer = Stemmer.Stemmer(config.stemmer)

    def _tokenize(self, texts: Sequence[str], return_ids: bool):
        bm25s = _require_bm25s()
        return bm25s.tokenize(
            list(texts),
            stopwords=self.config.stopwords,
            stemmer=self._stemmer,
            return_ids=return_ids,
            show_progress=False,
        )

    @classmethod
    def build(cls, corpus: Mapping[str, tuple[str, str]], config: BM25Config | None = None) -> BM25Retriever:
        """Index docid -> (title, text); title and text are indexed together, as in BEIR."""
        bm25s = _require_bm25s()
        if not corpus:
            raise DataError("the corpus is empty")
        config = config or BM25Config()
        index = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        retriever = cls(index, list(corpus), config)
        texts = [f"{title} {text}".strip() for title, text in corpus.values()]
        index.index(retriever._tokenize(texts, return_ids=True), show_progress=False)
        return retriever

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.index.save(folder, show_progress=False)
        (folder / CONFIG_FILE).write_text(json.dumps({"config": asdict(self.config), "docids": self.docids}) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> BM25Retriever:
        bm25s = _require_bm25s()
        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file():
            raise DataError(f"{folder} holds no headrank BM25 index ({CONFIG_FILE} missing)")
        saved = json.loads((folder / CONFIG_FILE).read_text())
        return cls(bm25s.BM25.load(folder, show_progress=False), saved["docids"], BM25Config(**saved["config"]))

    def search(self, queries: Mapping[str, str], k: int = 100) -> RankedRun:
        """Top-k (docid, score) per query id, best first; documents sharing no term with the query are left out."""
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        if not queries:
            return {}
        tokens = self._tokenize(list(queries.values()), return_ids=False)
        found, scores = self.index.retrieve(tokens, k=min(k, len(self.docids)), show_progress=False)
        return {
            qid: [(self.docids[int(d)], float(s)) for d, s in zip(row, row_scores) if s > 0]
            for qid, row, row_scores in zip(queries, found, scores)
        }


def write_retrieved(
    path: str | Path,
    run: Mapping[str, Sequence[tuple[str, float]]],
    queries: Mapping[str, str],
    corpus: Mapping[str, tuple[str, str]],
) -> None:
    """Candidates with text when the name says jsonl, else a TREC run of ids."""
    if ".jsonl" in Path(path).name:
        write_candidates(path, candidate_lists(run, queries, corpus))
    else:
        write_run(path, run, tag="bm25s")
