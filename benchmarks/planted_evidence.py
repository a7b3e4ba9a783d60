"""Do the highlights find the text that matters? Plant a judged-relevant passage among the same query's judged
non-relevant ones, as one document, and count how often the top highlight falls in the planted part.

usage: benchmarks/planted_evidence.py --dataset dl21|dl19 --data-dir ../shared/data [--fillers 2] [--seed 0]

Per query with a passage of grade >= 2 and `fillers` passages of grade 0 among its BM25 top-100: one relevant
passage (the first in BM25 order) at a random position among `fillers` non-relevant ones (the first ones),
joined by line breaks (so no sentence crosses two passages), ranked alone by the default ranker with
`highlights=True`. A hit: the top span lies inside the planted passage. Baselines: the sentence with the best
BM25 score against the query (bm25s over the document's sentences) and the first sentence; `random` is the
expected hit rate of a sentence drawn at random (the planted part's share of the sentences). DL21 is the design
set; DL19 reports. Each method's hit or miss per document is kept, and HeadRank is compared with each baseline
by the paired randomization test of `headrank compare`."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from headrank.artifact import DEFAULT_ARTIFACT
from headrank.baselines.bm25 import BM25Retriever
from headrank.datasets import judged_lists
from headrank.evaluation.significance import randomization_p
from headrank.highlights import sentence_spans


def planted_documents(name: str, data_dir: Path, fillers: int, seed: int) -> list[dict]:
    lists, qrels = judged_lists(name, data_dir)
    rng = random.Random(seed)
    out = []
    for lst in lists:
        grades = qrels[lst.qid]
        relevant = [c.text for c in lst.candidates if grades.get(c.docid, -1) >= 2]
        other = [c.text for c in lst.candidates if grades.get(c.docid, -1) == 0][:fillers]
        if not relevant or len(other) < fillers:
            continue
        position = rng.randrange(fillers + 1)
        parts = other[:position] + [relevant[0]] + other[position:]
        start = sum(len(p) + 1 for p in parts[:position])
        out.append(
            {"qid": lst.qid, "query": lst.query, "text": "\n".join(parts), "planted": (start, start + len(relevant[0]))}
        )
    return out


def inside(span: tuple[int, int], planted: tuple[int, int]) -> bool:
    return planted[0] <= span[0] and span[1] <= planted[1]


def bm25_top(query: str, text: str) -> tuple[int, int]:
    spans = sentence_spans(text)
    corpus = {str(i): ("", text[a:b]) for i, (a, b) in enumerate(spans)}
    found = BM25Retriever.build(corpus).search({"q": query}, k=1).get("q") or [("0", 0.0)]
    return spans[int(found[0][0])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    parser.add_argument("--fillers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from headrank.ranker import HeadRanker

    ranker = HeadRanker.from_artifact(args.artifact)
    documents = planted_documents(args.dataset, args.data_dir, args.fillers, args.seed)
    hits: dict[str, list[int]] = {"headrank highlight": [], "BM25 sentence": [], "first sentence": []}
    random_rate = 0.0
    truncated = 0
    for doc in documents:
        spans = sentence_spans(doc["text"])
        top = ranker.rank(doc["query"], [doc["text"]], highlights=True)[0].highlights[0]
        hits["headrank highlight"].append(int(inside((top.start, top.end), doc["planted"])))
        hits["BM25 sentence"].append(int(inside(bm25_top(doc["query"], doc["text"]), doc["planted"])))
        hits["first sentence"].append(int(inside(spans[0], doc["planted"])))
        random_rate += sum(inside(s, doc["planted"]) for s in spans) / len(spans)
        tokens = len(ranker.builder.tokenizer(" " + doc["text"], add_special_tokens=False)["input_ids"])
        truncated += tokens > ranker.config.template.max_passage_tokens
    n = len(documents)
    ours = hits["headrank highlight"]
    result = {
        "dataset": args.dataset,
        "documents": n,
        "fillers": args.fillers,
        "seed": args.seed,
        "longer than max_passage_tokens": truncated,
        "hit rate": {k: round(sum(v) / n, 4) for k, v in hits.items()} | {"random sentence": round(random_rate / n, 4)},
        "hits": {k: sum(v) for k, v in hits.items()},
        # the paired randomization test of `headrank compare`, over documents: hit (1) or miss (0) per method
        "headrank vs baseline": {
            name: {
                "headrank only": sum(a > b for a, b in zip(ours, theirs)),
                "baseline only": sum(b > a for a, b in zip(ours, theirs)),
                "p": randomization_p([a - b for a, b in zip(ours, theirs)]),
            }
            for name, theirs in hits.items()
            if name != "headrank highlight"
        },
        "per document": [{"qid": doc["qid"]} | {k: v[i] for k, v in hits.items()} for i, doc in enumerate(documents)],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
