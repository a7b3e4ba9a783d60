"""Named benchmarks in the layout of ../shared/data, read from a data directory or downloaded into one."""

from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from headrank.data import (
    CandidateList,
    DataError,
    Qrels,
    load_candidates,
    load_qrels,
    load_queries,
    write_candidates,
)

ANSERINI = "https://raw.githubusercontent.com/castorini/anserini-tools/master/topics-and-qrels"
RANK_LLM = "https://github.com/castorini/rank_llm_data/raw/main/retrieve_results/BM25"


NOVELEVAL = "https://raw.githubusercontent.com/sunnweiwei/RankGPT/main/NovelEval"
QUERIES, QRELS, CANDIDATES = "queries.jsonl", "qrels.tsv", "candidates.bm25top100.jsonl.gz"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a benchmark's files live inside the data directory, and where they come from."""

    name: str
    folder: str
    queries: str
    qrels: str
    candidates: str
    corpus: str | None = None
    """set when `candidates` is a TREC run of ids to join with a BEIR corpus."""
    sources: dict[str, str] = field(default_factory=dict)
    """file in the folder -> public URL of its raw form (converted on download). Without a queries source the
    queries are taken from the candidates (rank_llm's files carry them)."""
    origin: str = ""
    """where the files come from, said to the user when they are missing."""
    relevant_grade: int = 1
    """the lowest grade that counts as relevant where a measure is binary (TREC DL's convention is 2)."""


def _trec(
    name: str, topics: str, qrels: str, candidates: str | None, origin: str = "", relevant_grade: int = 1
) -> DatasetSpec:
    """A TREC/BEIR set: topics and qrels from anserini-tools (or given), BM25 top-100 with text from rank_llm_data."""
    sources = {QRELS: qrels if "://" in qrels else f"{ANSERINI}/{qrels}"}
    if topics:
        sources[QUERIES] = topics if "://" in topics else f"{ANSERINI}/{topics}"
    if candidates:
        sources[CANDIDATES] = f"{RANK_LLM}/{candidates}"
    origin = origin or "topics and qrels: castorini/anserini-tools; BM25 top-100 with text: castorini/rank_llm_data"
    return DatasetSpec(
        name, name, QUERIES, QRELS, CANDIDATES, sources=sources, origin=origin, relevant_grade=relevant_grade
    )


DATASETS: dict[str, DatasetSpec] = {
    "dl19": _trec(
        "dl19",
        "topics.dl19-passage.txt",
        "qrels.dl19-passage.txt",
        "retrieve_results_dl19_top100.jsonl",
        relevant_grade=2,
    ),
    "dl20": _trec(
        "dl20", "topics.dl20.txt", "qrels.dl20-passage.txt", "retrieve_results_dl20_top100.jsonl", relevant_grade=2
    ),
    "dl21": _trec(
        "dl21", "topics.dl21.txt", "qrels.dl21-passage.txt", "retrieve_results_dl21_top100.jsonl", relevant_grade=2
    ),
    "dl22": _trec(
        "dl22", "topics.dl22.txt", "qrels.dl22-passage.txt", "retrieve_results_dl22_top100.jsonl", relevant_grade=2
    ),
    "dl23": _trec(
        "dl23",
        "topics.dl23.txt",
        "qrels.dl23-passage.txt",
        None,
        "topics and qrels: castorini/anserini-tools (`headrank download dl23`); no public BM25 top-100 with passage "
        "text exists for DL23: retrieve one from the MS MARCO v2 passage corpus (pyserini's msmarco-v2-passage "
        f"index, or `headrank retrieve`) and write it as dl23/{CANDIDATES}",
        relevant_grade=2,
    ),
    "trec-covid": _trec(
        "trec-covid", "", "qrels.beir-v1.0.0-trec-covid.test.txt", "retrieve_results_covid_top100.jsonl"
    ),
    "trec-news": _trec("trec-news", "", "qrels.beir-v1.0.0-trec-news.test.txt", "retrieve_results_news_top100.jsonl"),
    "noveleval": _trec(
        "noveleval",
        "",
        f"{NOVELEVAL}/qrels.txt",
        "retrieve_results_noveleval_top100.jsonl",
        "qrels: sunnweiwei/RankGPT (NovelEval); BM25 top-100 with text: castorini/rank_llm_data",
    ),
    **{
        name: _trec(
            name,
            "",
            f"qrels.beir-v1.0.0-{name}.test.txt",
            None,
            f"qrels: castorini/anserini-tools (`headrank download {name}`); rank_llm_data has no BM25 top-100 with "
            f"text for this BEIR set: retrieve one from the BEIR corpus (pyserini's beir-v1.0.0-{name}.flat index, or "
            f"`headrank retrieve`) and write it as {name}/{CANDIDATES} with {name}/{QUERIES}",
        )
        for name in ("nfcorpus", "webis-touche2020", "dbpedia-entity", "signal1m", "robust04")
    },
    "scifact": DatasetSpec(
        "scifact",
        "beir-scifact",
        "queries.jsonl",
        "qrels.test.tsv",
        "candidates.bm25s_top100.test.jsonl.gz",
        origin="BEIR SciFact (allenai/scifact) with a bm25s top-100: build it with `headrank retrieve` over the "
        "BEIR corpus (see ../shared/data/README.md)",
    ),
    "scifact-train": DatasetSpec(
        "scifact-train",
        "beir-scifact",
        "queries.train.jsonl",
        "qrels.train.tsv",
        "run.bm25s_top100.train.trec.gz",
        corpus="corpus.jsonl.gz",
        origin="BEIR SciFact train queries and qrels, a bm25s top-100 TREC run and the BEIR corpus",
    ),
}


@dataclass
class Dataset:
    name: str
    lists: list[CandidateList]
    qrels: Qrels

    def judged(self) -> list[CandidateList]:
        """The candidate lists of queries that have relevance judgements, in file order."""
        return [c for c in self.lists if c.qid in self.qrels]


def spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: known are {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, data_dir: Path, depth: int | None = None) -> Dataset:
    s = spec(name)
    folder = data_dir / s.folder
    needed = [s.queries, s.qrels, s.candidates] + ([s.corpus] if s.corpus else [])
    missing = [f for f in dict.fromkeys(needed) if not (folder / f).is_file()]
    if missing:
        fetch = f"`headrank download {name} --data-dir {data_dir}`" if s.sources else "no download here"
        raise DataError(f"{name}: missing {', '.join(missing)} in {folder} ({fetch}; {s.origin})")
    qrels = load_qrels(folder / s.qrels)
    if s.corpus:
        lists = load_candidates(folder / s.candidates, folder / s.queries, folder / s.corpus, depth=depth)
    else:
        lists = load_candidates(folder / s.candidates, depth=depth)
    return Dataset(name, lists, qrels)


def judged_lists(
    name: str, data_dir: Path, depth: int | None = None, limit: int | None = None
) -> tuple[list[CandidateList], Qrels]:
    """The first `limit` judged queries' candidate lists (to `depth`) and the qrels: what selection and training
    learn from."""
    data = load_dataset(name, data_dir, depth=depth)
    judged = data.judged()
    return (judged[:limit] if limit else judged), data.qrels


def _fetch(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
        shutil.copyfileobj(response, out)


def download_dataset(name: str, data_dir: Path, base_url: str | None = None) -> Path:
    """Fetch the public raw files of a dataset and convert them to our layout.

    `base_url` replaces each source's directory (a mirror, or a local server in tests)."""
    s = spec(name)
    if not s.sources:
        raise DataError(f"{name} has no public source in our registry: place its files in {data_dir / s.folder}")
    folder = data_dir / s.folder
    folder.mkdir(parents=True, exist_ok=True)
    for filename, url in tqdm(s.sources.items(), desc=f"download {name}", unit="file"):
        if base_url:
            url = f"{base_url.rstrip('/')}/{url.rsplit('/', 1)[1]}"
        raw = folder / (url.rsplit("/", 1)[1] + ".raw")
        try:
            _fetch(url, raw)
        except OSError as err:
            raise DataError(f"could not download {url}: {err}") from err
        _convert(raw, folder / filename)
        raw.unlink()
    if QUERIES not in s.sources and CANDIDATES in s.sources:  # rank_llm's candidates carry the query texts
        lists = load_candidates(folder / CANDIDATES)
        (folder / QUERIES).write_text("".join(json.dumps({"qid": c.qid, "text": c.query}) + "\n" for c in lists))
    return folder


def _convert(raw: Path, target: Path) -> None:
    """Raw public file -> our layout, through the same readers that read our layout."""
    source = raw.with_name(raw.name.removesuffix(".raw"))
    raw.rename(source)
    try:
        if target.name.startswith("queries"):
            rows = [{"qid": q, "text": t} for q, t in load_queries(source).items()]
            target.write_text("".join(json.dumps(r) + "\n" for r in rows))
        elif target.name.startswith("qrels"):
            lines = ["query-id\tcorpus-id\tscore\n"]
            lines += [f"{q}\t{d}\t{r}\n" for q, docs in load_qrels(source).items() for d, r in docs.items()]
            target.write_text("".join(lines))
        else:
            write_candidates(target, load_candidates(source))
    finally:
        source.rename(raw)
