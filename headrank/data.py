"""Queries, qrels, candidate lists and TREC runs: read in the formats IR people use, written as TREC runs."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """A data file that is missing or not in a format we read."""


@dataclass
class Candidate:
    docid: str
    text: str
    title: str | None = None
    score: float | None = None


@dataclass
class CandidateList:
    """One query and its first-stage candidates, best first."""

    qid: str
    query: str
    candidates: list[Candidate] = field(default_factory=list)

    def head(self, depth: int | None) -> CandidateList:
        return CandidateList(self.qid, self.query, self.candidates[:depth] if depth else list(self.candidates))

    def documents(self) -> list[dict[str, str]]:
        return [{"text": c.text, "title": c.title or ""} for c in self.candidates]

    def docids(self) -> list[str]:
        return [c.docid for c in self.candidates]


Run = dict[str, dict[str, float]]
"""per query, docid -> score: what ir-measures and trec_eval take."""
RankedRun = dict[str, list[tuple[str, float]]]
"""per query, (docid, score) best first: what rerankers produce and TREC run files hold."""
Qrels = dict[str, dict[str, int]]


def scored(run: Mapping[str, Sequence[tuple[str, float]]]) -> Run:
    """A ranked run in the form ir-measures takes."""
    return {qid: dict(items) for qid, items in run.items()}


UNREADABLE = {
    EOFError: "is truncated: its gzip stream ends early",
    gzip.BadGzipFile: "is not a gzip file",
    zlib.error: "is corrupt: its gzip data does not decompress",
    UnicodeDecodeError: "is not UTF-8 text",
}
"""what a file that cannot be read as text is, by the error reading it raised."""


@contextmanager
def open_text(path: str | Path) -> Iterator[io.TextIOBase]:
    """A text file (gzip-compressed if it ends in .gz), read as UTF-8; a file that cannot be read so (missing,
    truncated, corrupt, not UTF-8) is a DataError that says which and why, wherever the reading fails."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        with _opened(path) as fh:
            yield fh
    except tuple(UNREADABLE) as err:
        why = next(text for kind, text in UNREADABLE.items() if isinstance(err, kind))
        raise DataError(f"{path} {why} ({err})") from None


def _opened(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def _jsonl(path: str | Path) -> Iterator[dict]:
    with open_text(path) as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not JSON: {err.msg}") from err


def _is_jsonl(path: str | Path) -> bool:
    return ".jsonl" in Path(path).name or ".json" in Path(path).name


def _rows(path: str | Path) -> Iterator[dict]:
    """Lines of a jsonl(.gz) file or rows of a parquet file (parquet needs pyarrow: the `distributed` extra)."""
    if Path(path).suffix != ".parquet":
        yield from _jsonl(path)
        return
    if not Path(path).is_file():
        raise DataError(f"file not found: {path}")
    import pyarrow.parquet as pq

    yield from pq.read_table(path).to_pylist()


def load_queries(path: str | Path) -> dict[str, str]:
    """jsonl ({qid|_id, text|query}), TSV (qid<TAB>text, TREC DL topics) or TREC SGML topics (<top>)."""
    if _is_jsonl(path):
        out = {}
        for row in _jsonl(path):
            qid, text = row.get("qid", row.get("_id")), row.get("text", row.get("query"))
            if qid is None or text is None:
                raise DataError(f"{path}: each line needs 'qid' (or '_id') and 'text' (or 'query')")
            out[str(qid)] = text
        return out
    with open_text(path) as fh:
        content = fh.read()
    if "<top>" in content:
        out = {}
        for block in re.findall(r"<top>(.*?)</top>", content, flags=re.S):
            num = re.search(r"<num>\s*(?:Number:)?\s*([^\s<]+)", block)
            title = re.search(r"<title>\s*(?:Topic:)?\s*(.*?)\s*(?=<|$)", block, flags=re.S)
            if num and title:
                out[num[1]] = " ".join(title[1].split())
        return out
    out = {}
    for number, line in enumerate(content.splitlines(), 1):
        if line.strip():
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                raise DataError(f"{path}:{number}: expected 'qid<TAB>text'")
            out[parts[0]] = parts[1]
    return out


def load_qrels(path: str | Path) -> Qrels:
    """TREC qrels (qid iter docid rel) or BEIR tsv (header query-id corpus-id score)."""
    qrels: Qrels = {}
    with open_text(path) as fh:
        for number, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0] == "query-id":
                continue
            if len(parts) == 4:
                qid, _, docid, rel = parts
            elif len(parts) == 3:
                qid, docid, rel = parts
            else:
                raise DataError(f"{path}:{number}: expected TREC qrels or BEIR 'query-id corpus-id score'")
            try:
                qrels.setdefault(qid, {})[docid] = int(float(rel))
            except ValueError as err:
                raise DataError(f"{path}:{number}: relevance {rel!r} is not a number") from err
    return qrels


def load_run(path: str | Path) -> RankedRun:
    """A TREC run (qid Q0 docid rank score tag) -> per query, (docid, score) best first."""
    rows: dict[str, list[tuple[int, float, str]]] = {}
    with open_text(path) as fh:
        for number, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(f"{path}:{number}: expected 'qid Q0 docid rank score tag'")
            try:
                rows.setdefault(parts[0], []).append((int(parts[3]), float(parts[4]), parts[2]))
            except ValueError as err:
                raise DataError(f"{path}:{number}: rank or score is not a number") from err
    return {
        qid: [(docid, score) for _, score, docid in sorted(items, key=lambda r: (-r[1], r[0]))]
        for qid, items in rows.items()
    }


def load_corpus(path: str | Path) -> dict[str, tuple[str, str]]:
    """BEIR corpus jsonl(.gz): docid -> (title, text)."""
    return {str(row["_id"]): (row.get("title") or "", row.get("text", "")) for row in _jsonl(path)}


def _rank_llm_rows(row: dict) -> CandidateList:
    """castorini/rank_llm_data lines: {query: {qid, text}, candidates: [{docid, score, doc: {...}}]}."""
    query = row["query"]
    items = []
    for c in row["candidates"]:
        doc = c.get("doc", {})
        text = doc.get("contents") or doc.get("segment") or doc.get("text") or doc.get("body") or ""
        items.append(Candidate(str(c["docid"]), text, doc.get("title"), c.get("score")))
    return CandidateList(str(query["qid"]), query["text"], items)


def load_candidates(
    path: str | Path,
    queries: str | Path | Mapping[str, str] | None = None,
    corpus: str | Path | Mapping[str, tuple[str, str]] | None = None,
    depth: int | None = None,
) -> list[CandidateList]:
    """Candidate lists from flat jsonl(.gz) or parquet ({qid, query, docid, rank, text[, title, score]}),
    rank_llm jsonl, or a TREC run joined with `queries` and a BEIR `corpus`."""
    if _is_jsonl(path) or Path(path).suffix == ".parquet":
        lists: dict[str, CandidateList] = {}
        ranks: dict[str, list[int]] = {}
        for row in _rows(path):
            if "candidates" in row and isinstance(row.get("query"), dict):
                item = _rank_llm_rows(row)
                lists[item.qid] = item
                continue
            missing = {"qid", "query", "docid", "text"} - row.keys()
            if missing:
                raise DataError(f"{path}: candidate line lacks {sorted(missing)}")
            qid = str(row["qid"])
            entry = lists.setdefault(qid, CandidateList(qid, row["query"]))
            entry.candidates.append(Candidate(str(row["docid"]), row["text"], row.get("title"), row.get("score")))
            ranks.setdefault(qid, []).append(int(row.get("rank", len(entry.candidates))))
        for qid, r in ranks.items():
            entry = lists[qid]
            entry.candidates = [c for _, c in sorted(zip(r, entry.candidates), key=lambda x: x[0])]
        return _some(path, [c.head(depth) for c in lists.values()])
    if queries is None or corpus is None:
        raise DataError(f"{path} is a TREC run: give the queries and the corpus to join it with")
    queries = queries if isinstance(queries, Mapping) else load_queries(queries)
    corpus = corpus if isinstance(corpus, Mapping) else load_corpus(corpus)
    out = []
    for qid, ranked in load_run(path).items():
        if qid not in queries:
            raise DataError(f"run query {qid} has no text in the queries file")
        items = []
        for docid, score in ranked[:depth] if depth else ranked:
            if docid not in corpus:
                raise DataError(f"run document {docid} is not in the corpus")
            title, text = corpus[docid]
            items.append(Candidate(docid, text, title or None, score))
        out.append(CandidateList(qid, queries[qid], items))
    return _some(path, out)


def _some(path: str | Path, lists: list[CandidateList]) -> list[CandidateList]:
    """An empty candidates file is a mistake (a failed export, the wrong file), not a run of no queries."""
    if not lists:
        raise DataError(f"{path} holds no candidate lists")
    return lists


def candidate_lists(
    run: Mapping[str, Sequence[tuple[str, float]]], queries: Mapping[str, str], corpus: Mapping[str, tuple[str, str]]
) -> list[CandidateList]:
    """Join a run with query and passage text: the lists HeadRanker and the CLI rerank."""
    return [
        CandidateList(
            qid, queries[qid], [Candidate(d, corpus[d][1], corpus[d][0] or None, score) for d, score in ranked]
        )
        for qid, ranked in run.items()
    ]


def write_candidates(path: str | Path, lists: Sequence[CandidateList]) -> None:
    """Our flat candidates layout: one jsonl(.gz) line per (query, candidate), read back by `load_candidates`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as out:
        for lst in lists:
            for rank, c in enumerate(lst.candidates, 1):
                row = {"qid": lst.qid, "query": lst.query, "docid": c.docid, "rank": rank, "score": c.score}
                row["text"] = c.text
                if c.title:
                    row["title"] = c.title
                out.write(json.dumps(row) + "\n")


def write_run(path: str | Path, run: Mapping[str, Sequence[tuple[str, float]]], tag: str = "headrank") -> None:
    """Write per query (docid, score) best first as a TREC run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fh.writelines(run_lines(run, tag))


def run_lines(run: Mapping[str, Sequence[tuple[str, float]]], tag: str = "headrank") -> Iterator[str]:
    """TREC run lines, so a large run can be written as it is produced."""
    for qid, ranked in run.items():
        for rank, (docid, score) in enumerate(ranked, 1):
            yield f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n"


def run_from_ranking(lists: Iterable[tuple[str, Sequence[str]]]) -> RankedRun:
    """Scores that encode a given order exactly (n, n-1, ...), so ties never reorder it."""
    return {qid: [(d, float(len(docids) - i)) for i, d in enumerate(docids)] for qid, docids in lists}


def default_data_dir(explicit: str | Path | None = None) -> Path:
    value = explicit or os.environ.get("HEADRANK_DATA")
    if not value:
        raise DataError("no data directory: pass --data-dir or set HEADRANK_DATA (e.g. ../shared/data)")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    return path
