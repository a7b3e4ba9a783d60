"""A list that does not fit one window, ranked round by round: each round is a set of prompts (each one forward
pass, nothing decoded) whose scores decide the next round. `ListRun` holds one list's chain, so the library
(`HeadRanker.score_requests`) and the server's scheduler drive the same rounds, batching many lists' prompts.

Merges (docs/long-lists.md has what each scored on training data):
* "sliding": RankGPT's sliding windows from the bottom of the list up (`slide_size` passages, `slide_step` apart):
  each window's ranking by our scores reorders its positions before the window moves up, so a relevant passage of
  the last window can bubble to the top. One window after another: a chain of passes, one per round.
* "tournament": the balanced windows, then each window's leaders in a final window ranked above the rest.
* "scaled": the balanced windows' scores as they are (the first merge).
A list that fits one window is one prompt scored as it is, whatever the merge."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from headrank.engine import defaults
from headrank.engine.prompt import ListwisePrompt, PromptBuilder, input_order, passage_tokens
from headrank.engine.scoring import ListScores
from headrank.results import best_first

MERGE_SETTINGS = {"sliding": ("slide_size", "slide_step"), "tournament": ("leaders",), "scaled": ()}
"""the settings each merge reads beyond `max_length`: what a run's metadata records to say how it merged."""

Passes = list[tuple[list[int], ListScores]]
"""scored prompts of one round of a list: (document indices by input position, scores)."""


@dataclass(frozen=True)
class MergePlan:
    """The ranker's settings that a list's rounds read (`HeadRanker.merge_plan`), checked there."""

    builder: PromptBuilder
    max_length: int
    weights: tuple[float, ...]
    """the heads' weights, in the order of `ListScores.per_head`."""
    calibrate: bool
    merge: str = defaults.MERGE
    leaders: int | None = None
    slide_size: int = defaults.SLIDE_SIZE
    slide_step: int = defaults.SLIDE_STEP
    order: str = defaults.ORDER
    seed: int = 0

    def describe(self) -> dict:
        """The merge and the settings it reads, so that two runs of a split list say how they differ
        (`--slide-step 15` is otherwise invisible in metrics.json and /health)."""
        return {"merge": self.merge, **{name: getattr(self, name) for name in MERGE_SETTINGS[self.merge]}}

    def prompt_tokens(self, prompt: ListwisePrompt) -> int:
        """Tokens one prompt costs: its passages and query span, and the N/A span when calibrating."""
        return len(prompt.input_ids) + (len(prompt.calibration_ids) if self.calibrate else 0)


def head_table(heads: int, count: int, passes: Iterable[tuple[list[int], ListScores]]) -> torch.Tensor:
    """[heads, documents] in the caller's document order from the scored passes of a list of `count`."""
    table = torch.zeros(heads, count)
    for window, scores in passes:
        table[:, window] = scores.per_head.float().cpu()
    return table


def combined(weights: Sequence[float], count: int, first: Passes, *rounds: Passes) -> list[float]:
    """One score per document of a list of `count`, in the caller's order: the first round's scores as they are,
    then each later round's documents lifted above the rest (a tournament's final windows)."""
    w = torch.tensor(weights)
    with torch.inference_mode():
        scores = (w @ head_table(len(w), count, first)).tolist()
        for passes in rounds:
            ahead = (w @ head_table(len(w), count, passes)).tolist()
            scores = lifted(scores, {d: ahead[d] for order, _ in passes for d in order})
    return scores


def lifted(scores: Sequence[float], ahead: dict[int, float]) -> list[float]:
    """`scores` with the documents of `ahead` given their scores there, shifted to rank above every other document
    (by one unit of `ahead`'s mean gap), so a later round of a tournament decides the top of the list."""
    rest = [s for d, s in enumerate(scores) if d not in ahead]
    if not rest or not ahead:
        return list(scores)
    low, high = min(ahead.values()), max(ahead.values())
    shift = max(rest) - low + ((high - low) / len(ahead) or 1.0)
    return [ahead[d] + shift if d in ahead else s for d, s in enumerate(scores)]


@dataclass
class ListRun:
    """One list's chain of rounds: `prompts` are the ones to score next (none once the list is done); `advance`
    takes their scores and makes the next ones; `scores` is the list's ranking score per document at the end."""

    plan: MergePlan
    count: int
    prompts: list[ListwisePrompt]
    rounds: list[Passes] = field(default_factory=list)
    """the scored rounds, in order."""
    windows: int = 0
    """windows of the list: its balanced windows, or for "sliding" the sliding windows run so far."""
    passes: int = 0
    """prompts scored (each one forward pass)."""
    tokens: int = 0
    """tokens of those prompts (`MergePlan.prompt_tokens`)."""
    ranking: list[int] = field(default_factory=list)
    """"sliding": the documents best first as the windows scored so far left them (empty for other merges)."""
    span: tuple[int, int] = (0, 0)
    """"sliding": [start, end) of `ranking` that the current window holds."""
    passage_ids: dict[int, list[int]] = field(default_factory=dict)
    """"sliding": each document's tokens, taken from the balanced windows (never tokenized again)."""
    like: ListwisePrompt | None = None
    """"sliding": a window of the list, whose query spans every sliding window reuses."""

    @classmethod
    def begin(cls, plan: MergePlan, count: int, windows: list[ListwisePrompt]) -> ListRun:
        """The run of a list of `count` documents whose balanced windows are `windows` (`HeadRanker.prompts`): one
        window is scored as it is; more go on as `plan.merge` says."""
        run = cls(plan, count, list(windows), windows=len(windows))
        if len(windows) > 1 and plan.merge == "sliding":
            # the list best first as the prompts place it (shuffled when the order is random: no order relied on)
            first = input_order(count, plan.order, plan.seed)
            run.ranking = first if plan.order == "random" else list(range(count))
            run.windows, run.span = 0, (count, count)
            run.passage_ids, run.like = passage_tokens(windows), windows[0]
            run.prompts = [run._slide()]
        return run

    def advance(self, scores: Sequence[ListScores]) -> bool:
        """Record the scores of `prompts` (in their order) and make the next round's; False when the list is done."""
        passes = [(p.order, s) for p, s in zip(self.prompts, scores)]
        self.rounds.append(passes)
        self.passes += len(passes)
        self.tokens += sum(self.plan.prompt_tokens(p) for p in self.prompts)
        if self.ranking:
            self.prompts = self._next_window(passes)
        else:
            self.prompts = self._final_windows(scores)
        return bool(self.prompts)

    def scores(self) -> list[float]:
        """One score per document in the caller's order, descending along the list's final ranking."""
        if not self.rounds:
            return [0.0] * self.count
        if not self.ranking:
            return combined(self.plan.weights, self.count, *self.rounds)
        # "sliding": the top window's own scores, then one mean gap of them lower per rank below it
        top = self._scores_of(self.rounds[-1])
        low, high = min(top.values()), max(top.values())
        gap = (high - low) / len(top) or 1.0
        out = [0.0] * self.count
        for rank, d in enumerate(self.ranking):
            out[d] = top[d] if rank < len(top) else low - gap * (rank - len(top) + 1)
        return out

    def evidence(self) -> Passes:
        """The passes whose scores the top of the list carries (for the calibration's list features): the
        balanced windows, or the top sliding window."""
        if not self.rounds:
            return []
        return self.rounds[-1] if self.ranking else self.rounds[0]

    def _scores_of(self, passes: Passes) -> dict[int, float]:
        """The documents of `passes` and their scores, computed as `combined` computes them."""
        scores = combined(self.plan.weights, self.count, passes)
        return {d: scores[d] for order, _ in passes for d in order}

    def _final_windows(self, scores: Sequence[ListScores]) -> list[ListwisePrompt]:
        """A tournament's next round after `prompts` were scored: a final window over the windows' leaders (split
        again when they do not fit one); none after one window, or under "scaled"."""
        last, plan = self.prompts, self.plan
        if len(last) < 2 or plan.merge != "tournament":
            return []
        ranked = [best_first(s.scores.tolist()) for s in scores]
        final = plan.builder.leaders(last, ranked, plan.max_length, plan.leaders)
        if len(final.order) == sum(len(p.order) for p in last):  # windows of one passage each: nothing to play
            return []
        return plan.builder.split(final, plan.max_length)

    def _next_window(self, passes: Passes) -> list[ListwisePrompt]:
        """Reorder the scored window's positions of `ranking` by its scores, then the window one step up (none
        after the top one)."""
        start, end = self.span
        local = self._scores_of(passes)
        held = self.ranking[start:end]
        self.ranking[start:end] = [held[j] for j in best_first([local[d] for d in held])]
        if start == 0:
            return []
        # the step is `slide_step` for a full window, in proportion for one cut short by `max_length`
        step = max(1, (end - start) * self.plan.slide_step // self.plan.slide_size)
        self.span = (end - step, end - step)
        return [self._slide()]

    def _slide(self) -> ListwisePrompt:
        """The sliding window that ends at `span`'s end: up to `slide_size` passages going up the ranking, as many
        as fit `max_length` (at least one), in the prompt order of the plan."""
        plan, builder, like, ids = self.plan, self.plan.builder, self.like, self.passage_ids
        end = self.span[1]
        length = len(builder.head_ids) + max(len(like.query_ids), len(like.calibration_ids))
        marker = len(builder.marker_ids(plan.slide_size - 1))  # the longest marker bounds every other
        start = end
        while start > 0 and end - start < plan.slide_size:
            extra = marker + len(ids[self.ranking[start - 1]])
            if start < end and length + extra > plan.max_length:
                break
            length, start = length + extra, start - 1
        self.span = (start, end)
        self.windows += 1
        held = self.ranking[start:end]
        return builder.rebuild(like, ids, [held[i] for i in input_order(len(held), plan.order, plan.seed)])
