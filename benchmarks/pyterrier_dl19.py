"""The README's PyTerrier pipeline on TREC DL19 (BM25 top-100 from ../shared/data): BM25 against
`BM25 >> HeadRankReranker() % 20`-style reranking of the top 20, in pt.Experiment with a paired t-test.

    python -m benchmarks.pyterrier_dl19 --data-dir ../shared/data [--top-k 20] [--model embedded]
"""

from __future__ import annotations

import argparse

import pandas as pd
import pyterrier as pt
from ir_measures import RR, nDCG

from headrank.data import default_data_dir
from headrank.datasets import load_dataset
from headrank.evaluation.metrics import machine
from headrank.pyterrier import HeadRankReranker, qrels_frame, result_frame


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument(
        "--model", default="embedded", help="what HeadRankReranker loads (default: the committed HeadRank)"
    )
    args = parser.parse_args(argv)

    dl19 = load_dataset("dl19", default_data_dir(args.data_dir))
    bm25 = pt.Transformer.from_df(result_frame(dl19.judged()))  # stands for any first stage: pt.terrier.Retriever ...
    topics = result_frame(dl19.judged())[["qid", "query"]].drop_duplicates()
    table = pt.Experiment(
        [bm25, bm25 >> HeadRankReranker(args.model, top_k=args.top_k)],
        topics,
        qrels_frame(dl19.qrels),
        eval_metrics=[nDCG @ 10, RR(rel=2)],
        names=["BM25", f"BM25 >> HeadRankReranker(top_k={args.top_k})"],
        baseline=0,
    )
    print(table.to_string(index=False, float_format="{:.4f}".format))
    print(f"\n{len(topics)} queries; machine: {machine()}")
    return table


if __name__ == "__main__":
    main()
