"""The worker that owns the model behind the server: requests queue here, and one thread batches the prompts of
the active requests into forward passes under the ranker's token budget, the longest-waiting request first.
A pass whose requests are all cancelled (their clients left, the shutdown grace ran out) or that runs while the
worker stops ends at its next layer, so abandoned work costs a layer, not the rest of a pass.

Kept apart from the HTTP layer so that it needs only torch (the GPU checks run it where no web stack is
installed)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import torch

from headrank.engine.capture import Interrupted, interruptible
from headrank.ranker import HeadRanker
from headrank.results import Document
from headrank.rounds import ListRun

LOG = logging.getLogger(__name__)


class QueueFull(Exception):
    """The request queue is at capacity: the client should retry later."""


class Overloaded(Exception):
    """The device ran out of memory even for one prompt alone: the client should retry later."""


@dataclass
class JobClock:
    """What one request cost and when it reached each stage (`time.monotonic()`), filled in as it goes: the
    server's timing headers, request log and metrics read it."""

    tokenize_s: float | None = None
    prompt_tokens: int = 0
    """tokens of the list's prompts (passages and query span; not the N/A calibration span)."""
    queued: float | None = None
    started: float | None = None
    """when the first forward pass that holds one of its prompts began."""
    finished: float | None = None


@dataclass
class _Job:
    """One request in the worker: its list's chain of rounds, its prompts scored as batches make room for them,
    and the future its handler awaits."""

    run: ListRun
    """the list's chain of rounds (headrank/rounds.py): its prompts are the current round's."""
    future: Future = field(default_factory=Future)
    scored: dict = field(default_factory=dict)
    """scores of the current round's prompts scored so far, by the prompt's index in `run.prompts`."""
    clock: JobClock = field(default_factory=JobClock)

    @property
    def pending(self) -> list:
        """(index, prompt) of the current round's prompts not scored yet."""
        return [(i, p) for i, p in enumerate(self.run.prompts) if i not in self.scored]

    def advance(self) -> bool:
        """Close the finished round and queue the next one (a split list's next window); False when done."""
        more = self.run.advance([self.scored[i] for i in range(len(self.run.prompts))])
        self.scored = {}
        self.clock.prompt_tokens += sum(len(p.input_ids) for p in self.run.prompts)  # later rounds are scored too
        return more


class Scheduler:
    """One worker thread that owns the model. Each step forms one batch from the ready prompts of the active
    requests (the longest-waiting first) under the ranker's token budget and `max_batch_requests`, so that
    concurrent clients share forward passes and a long list cannot hold back a short one."""

    def __init__(self, ranker: HeadRanker, queue_size: int = 32, max_active: int = 32, max_batch_requests: int = 32):
        self.ranker = ranker
        self.max_active = max_active
        self.max_batch_requests = max_batch_requests
        self.waiting: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.active: deque[_Job] = deque()
        """admitted jobs, the one served longest ago first."""
        self.on_pass: Callable[[int, int], None] | None = None
        """called after each forward pass with its prompts and padded tokens (prompts x the longest)."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="headrank-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Cancel every job and end the worker: a pass in flight stops at its next layer. False if the worker is
        still inside a layer after `timeout` seconds (it is a daemon thread: the process may exit without it)."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):  # a full queue means the worker is not idle in get()
            self.waiting.put_nowait(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            LOG.warning("the model worker is still inside a layer after %s s; leaving it", timeout)
        return not self._thread.is_alive()

    def submit(
        self, query: str, documents: Sequence[Document], future: Future | None = None, clock: JobClock | None = None
    ) -> Future:
        """Tokenize a list and queue it; the future (`future`, or a new one) gets one score per document (a
        ScoredList: with the calibrated relevance when the ranker has a calibration), and `clock` the job's
        timings. Input is checked here (call it off the event loop: tokenizing a large request takes seconds). A
        future cancelled while this tokenized (its client left) is not queued; after `stop` every future is
        cancelled."""
        clock = clock or JobClock()
        start = time.monotonic()
        job = _Job(self.ranker.run_list(query, documents), future or Future(), clock=clock)
        clock.tokenize_s = time.monotonic() - start
        clock.prompt_tokens = sum(len(p.input_ids) for p in job.run.prompts)
        if not job.future.cancelled():
            clock.queued = time.monotonic()
            try:
                self.waiting.put_nowait(job)
            except queue.Full:
                clock.queued = None
                raise QueueFull(f"{self.waiting.maxsize} requests already waiting") from None
        if self._stopping.is_set():  # stopped meanwhile: nothing will serve it
            job.future.cancel()
        return job.future

    def _admit(self) -> bool:
        """Move waiting jobs into the active set (blocking when idle); False once stopped."""
        while len(self.active) < self.max_active:
            try:
                job = self.waiting.get(block=not self.active)
            except queue.Empty:
                return True
            if job is None:
                return False
            self.active.append(job)
        return True

    def _run(self) -> None:
        while not self._stopping.is_set() and self._admit():
            self._step()
        for job in self.active:
            job.future.cancel()
        with contextlib.suppress(queue.Empty):
            while True:
                job = self.waiting.get_nowait()
                if job is not None:
                    job.future.cancel()

    def _step(self) -> None:
        """Drop cancelled jobs, run one batch, settle the jobs it finished, and rotate the ones it served."""
        for job in [j for j in self.active if j.future.cancelled() or not j.pending]:
            self.active.remove(job)
            if not job.future.cancelled():  # an empty list: nothing to run
                self._settle(job, result=self.ranker.finish(job.run))
        if not self.active:
            return
        pool = [(job, ip) for job in list(self.active)[: self.max_batch_requests] for ip in job.pending]
        groups = self.ranker.batches([p for _, (_, p) in pool])
        chosen = [pool[i] for i in next(g for g in groups if 0 in g)]  # the longest-waiting job's next prompt
        jobs = list({id(j): j for j, _ in chosen}.values())
        began = time.monotonic()
        for job in jobs:
            job.clock.started = job.clock.started or began
        try:
            with interruptible(lambda: self._stopping.is_set() or all(j.future.cancelled() for j in jobs)):
                results = self._score([p for _, (_, p) in chosen])
        except Interrupted:  # every job of the batch is gone, or the worker is stopping: the next step drops them
            return
        except Exception as err:  # one bad batch fails its own jobs, never the worker
            for job in jobs:
                self.active.remove(job)
                self._settle(job, error=err)
            return
        if self.on_pass is not None:
            self.on_pass(len(chosen), len(chosen) * max(len(p.input_ids) for _, (_, p) in chosen))
        served = []
        for (job, (index, _)), scores in zip(chosen, results):
            job.scored[index] = scores
            if job not in served:
                served.append(job)
        for job in served:
            self.active.remove(job)
            try:
                if job.pending or job.advance():
                    self.active.append(job)  # served: to the back of the line
                else:
                    self._settle(job, result=self.ranker.finish(job.run))
            except Exception as err:  # a list that cannot go on fails alone, never the worker
                self._settle(job, error=err)

    def _score(self, prompts: list) -> list:
        """Score a batch; on running out of device memory, in halves, down to one prompt (then `Overloaded`)."""
        try:
            return self.ranker.score_many(prompts)
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(prompts) == 1:
                raise Overloaded("the device is out of memory for this list; retry later") from None
            half = len(prompts) // 2
            return self._score(prompts[:half]) + self._score(prompts[half:])

    @staticmethod
    def _settle(job: _Job, result=None, error: Exception | None = None) -> None:
        job.clock.finished = time.monotonic()
        with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)
