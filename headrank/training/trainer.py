"""The LoRA trainer: accumulated list gradients, warm-up and linear decay, learning-curve points every
`eval_every` steps, the best-validation adapter kept, and a checkpoint that `resume` continues exactly."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from headrank.engine.adapters import inject_lora
from headrank.engine.prompt import ListwisePrompt
from headrank.ranker import HeadRanker
from headrank.training.config import TrainConfig
from headrank.training.curves import curve_point
from headrank.training.lists import TrainingList
from headrank.training.losses import distribution_regularizer, reference_kl, score_scale
from headrank.training.objectives import objective
from headrank.training.pairs import stable_seed
from headrank.training.prefix_cache import PrefixStore, prefix_key


class PreferenceTrainer:
    """LoRA on the layers up to the truncation depth of `ranker`, trained on its selected heads' scores.

    The frozen base (adapters disabled) is the reference model and, with query-span adapters, also encodes
    the passages: their pass is computed once per (list, order) and reused (`PrefixStore`)."""

    def __init__(
        self, ranker: HeadRanker, config: TrainConfig, cache_dir: Path | None = None, identity: dict | None = None
    ):
        self.ranker, self.config = ranker, config
        self.objective = objective(config.loss)
        self.identity = identity or {}
        """what a checkpoint must have been trained on to be resumed here (data, split, heads, base model)."""
        torch.manual_seed(config.seed)
        self.adapter = inject_lora(  # the LoRA layers are injected into ranker.model
            ranker.model,
            config.lora_rank,
            config.lora_alpha,
            config.lora_dropout,
            list(config.lora_targets) or ranker.family.lora_targets(),
            ranker.depth,
        )
        self.prefixes: PrefixStore | None = None
        ranker.adapt(self.adapter, query_only=config.adapters == "query")
        if config.adapters == "query":  # else the passages pass through the adapters, with gradient
            self.prefixes = PrefixStore(ranker, config.cache_dtype, cache_dir)
        self.params = self.adapter.trainable()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.references: dict[str, torch.Tensor] = {}
        self.steps_done = 0
        self.history: dict = {"steps": [], "evals": [], "best_step": None}
        self.best_state: dict[str, torch.Tensor] | None = None

    # -- scoring --------------------------------------------------------------------------------------------
    def prefix(self, prompt: ListwisePrompt):
        return self.prefixes.get(prompt) if self.prefixes is not None else None

    @property
    def prefix_for(self):
        """The stored passage passes for batched scoring, or None when the passages are not frozen (every-token
        adapters): then each batch encodes its own, never a batch of Nones."""
        return self.prefixes.get if self.prefixes is not None else None

    def reference(self, prompt: ListwisePrompt) -> torch.Tensor:
        """The frozen base's scores of this prompt: they never change, so each is computed once."""
        key = prefix_key(prompt) + ":" + ",".join(map(str, prompt.query_ids))
        if key not in self.references:
            with torch.no_grad(), self.adapter.off():
                self.references[key] = self.ranker.prompt_scores(prompt, self.prefix(prompt)).scores.detach()
        return self.references[key]

    def prompts(self, item: TrainingList, epoch: int) -> list[ListwisePrompt]:
        """Inference order, or one of `shuffles` seeded shuffles per list cycled by epoch (each cached once)."""
        if self.config.order == "inference":
            return self.ranker.prompts(item.query, item.texts)
        variant = epoch % self.config.shuffles
        return self.ranker.prompts(item.query, item.texts, "random", stable_seed(self.config.seed, variant, item.qid))

    # -- one list -------------------------------------------------------------------------------------------
    def list_loss(self, item: TrainingList, epoch: int, rng: random.Random) -> tuple[torch.Tensor, dict] | None:
        """The loss of one list (mean over its windows), or None when no window has anything to teach."""
        config = self.config
        losses, right, pairs_seen = [], 0, 0
        for prompt in self.prompts(item, epoch):
            grades = item.grades[prompt.order]
            s_ref = self.reference(prompt)
            s_theta = self.ranker.prompt_scores(prompt, self.prefix(prompt)).scores
            scale = score_scale(s_ref, config)
            judged = self.objective.loss(s_theta, s_ref, grades, scale, config, rng)
            if judged is None:
                continue
            main, plus, minus = judged
            s = s_theta.detach().cpu().numpy()
            right += int((s[plus] > s[minus]).sum())
            pairs_seen += len(plus)
            regularizer = distribution_regularizer(s_theta, config, scale)
            if config.kl:
                regularizer = regularizer + config.kl * reference_kl(s_theta, s_ref, scale)
            losses.append(main + regularizer)
        if not losses:
            return None
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.item(), "pair_accuracy": right / pairs_seen if pairs_seen else None}

    # -- the loop -------------------------------------------------------------------------------------------
    def steps_per_epoch(self, count: int) -> int:
        return math.ceil(count / self.config.lists_per_step)

    def batch(self, count: int, step: int) -> tuple[int, list[int]]:
        """(epoch, list indices) of a global optimizer step: a seeded shuffle per epoch, cut into batches."""
        epoch, index = divmod(step, self.steps_per_epoch(count))
        order = list(range(count))
        random.Random(stable_seed(self.config.seed, epoch)).shuffle(order)
        size = self.config.lists_per_step
        return epoch, order[index * size : (index + 1) * size]

    def learning_rate(self, step: int, total: int) -> float:
        warm = round(self.config.warmup * total)
        if step < warm:
            return self.config.lr * (step + 1) / warm
        return self.config.lr * max(0.0, (total - step) / max(1, total - warm))

    def evaluate(self, sample: Sequence[TrainingList], validation: Sequence[TrainingList]) -> dict:
        """One learning-curve point; keeps the adapter of the best validation nDCG@10 (the first on ties), or
        the latest one when there are no validation lists to choose by."""
        start = time.perf_counter()
        self.adapter.train(False)  # no LoRA dropout in a curve point
        point = {
            "step": self.steps_done,
            "train": curve_point(self.ranker, sample, self.prefix_for),
            "validation": curve_point(self.ranker, validation, self.prefix_for),
        }
        point["seconds"] = time.perf_counter() - start
        self.history["evals"].append(point)
        score = point["validation"]["ndcg@10"]
        best = self.best_point()
        if best is None or score is None or score > best["validation"]["ndcg@10"]:
            self.history["best_step"] = self.steps_done
            self.best_state = self.adapter_state()
        return point

    def stale(self) -> bool:
        """Early stopping: `patience` curve points in a row without a better validation nDCG@10."""
        evals, best = self.history["evals"], self.history["best_step"]
        since = sum(1 for e in evals if e["step"] > best) if best is not None else 0
        return bool(self.config.patience) and since >= self.config.patience

    def best_point(self) -> dict | None:
        return next((e for e in self.history["evals"] if e["step"] == self.history["best_step"]), None)

    def train_sample(self, items: Sequence[TrainingList]) -> list[TrainingList]:
        chosen = sorted(
            random.Random(self.config.seed).sample(range(len(items)), min(len(items), self.config.train_sample))
        )
        return [items[i] for i in chosen]

    def fit(
        self,
        items: Sequence[TrainingList],
        validation: Sequence[TrainingList],
        out: Path | None = None,
        progress: bool = True,
        stop_after: int | None = None,
    ) -> dict:
        """Run the remaining optimizer steps (at most `stop_after` now: a time-boxed session resumes later);
        a learning-curve point and a checkpoint every `eval_every`."""
        config = self.config
        total = config.epochs * self.steps_per_epoch(len(items))
        sample = self.train_sample(items)
        if not self.history["evals"]:
            self.evaluate(sample, validation)  # step 0: the untrained heads
        end = total if stop_after is None else min(total, self.steps_done + stop_after)
        bar = tqdm(range(self.steps_done, end), desc="train", unit="step", disable=not progress)
        for step in bar:
            if self.stale():
                self.history["stopped_early"] = self.steps_done
                break
            start = time.perf_counter()
            self.adapter.train()  # LoRA dropout, when configured
            epoch, batch = self.batch(len(items), step)
            rng = random.Random(stable_seed(config.seed, "step", step))
            lr = self.learning_rate(step, total)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad()
            records = []
            for index in batch:
                result = self.list_loss(items[index], epoch, rng)
                if result is None:
                    continue
                loss, record = result
                (loss / len(batch)).backward()
                records.append(record)
            if records:
                torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
                self.optimizer.step()
            self.steps_done = step + 1
            accuracies = [r["pair_accuracy"] for r in records if r["pair_accuracy"] is not None]
            self.history["steps"].append(
                {
                    "step": self.steps_done,
                    "epoch": epoch + 1,
                    "lr": lr,
                    "loss": float(np.mean([r["loss"] for r in records])) if records else float("nan"),
                    "pair_accuracy": float(np.mean(accuracies)) if accuracies else None,
                    "lists": len(records),
                    "seconds": time.perf_counter() - start,
                }
            )
            if self.steps_done % config.eval_every == 0 or self.steps_done == total:
                point = self.evaluate(sample, validation)
                bar.set_postfix(val=f"{point['validation']['ndcg@10'] or 0:.4f}")
                if out is not None:
                    self.save_checkpoint(out)
        self.adapter.train(False)
        return self.history

    # -- state ----------------------------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        return self.adapter.state()

    def load_adapter(self, state: dict[str, torch.Tensor]) -> None:
        self.adapter.load_state(state)

    def save_checkpoint(self, out: Path) -> None:
        """out/last: adapter, optimizer and history, plus best.safetensors, the best validation adapter. Written
        beside (last.partial, its trainer_state.json last) and renamed into place, so that an interruption at
        any point leaves a whole checkpoint that `recover_checkpoint` finds."""
        import shutil

        from safetensors.torch import save_file

        recover_checkpoint(out)
        folder, fresh = Path(out) / "last", Path(out) / "last.partial"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        save_file(self.adapter_state(), fresh / "adapter.safetensors")
        if self.best_state is not None:
            save_file(self.best_state, fresh / "best.safetensors")
        state = self.optimizer.state_dict()
        tensors = {f"{i}.{k}": v.contiguous() for i, s in state["state"].items() for k, v in s.items()}
        save_file(tensors, fresh / "optimizer.safetensors")
        meta = {
            "steps_done": self.steps_done,
            "history": self.history,
            "config": asdict(self.config),
            "identity": self.identity,
            "param_groups": state["param_groups"],
        }
        (fresh / "trainer_state.json").write_text(json.dumps(meta, indent=1) + "\n")
        old = Path(out) / "last.old"
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        fresh.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    def resume(self, out: Path) -> bool:
        """Load the checkpoint under `out`; False when there is none. Refuses, naming what differs, a checkpoint
        of another run: other training settings, data, split, heads or base model."""
        from safetensors.torch import load_file

        folder = recover_checkpoint(out)
        if folder is None:
            return False
        meta = json.loads((folder / "trainer_state.json").read_text())
        differences = _differences(json.loads(json.dumps(asdict(self.config))), meta["config"], "setting")
        differences += _differences(json.loads(json.dumps(self.identity)), meta.get("identity", {}), "run")
        if differences:
            raise ValueError(f"{folder} belongs to another run ({'; '.join(differences)}): start a new --out")
        self.load_adapter(load_file(folder / "adapter.safetensors"))
        if (folder / "best.safetensors").is_file():
            self.best_state = load_file(folder / "best.safetensors")
        state: dict[int, dict] = {}
        for key, value in load_file(folder / "optimizer.safetensors").items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.steps_done, self.history = meta["steps_done"], meta["history"]
        return True


def recover_checkpoint(out: Path) -> Path | None:
    """The whole checkpoint under `out` after any interruption of `save_checkpoint`, put back at out/last:

    * last (+ a half-written last.partial): last; the partial is rewritten by the next save;
    * last.old + a whole last.partial (between the two renames): the partial, the newer one;
    * last + last.old, whole or half-removed (before or while the old one is removed): last.
    A folder is whole once its trainer_state.json exists: it is written last."""
    import shutil

    out = Path(out)
    last, old, partial = out / "last", out / "last.old", out / "last.partial"

    def whole(folder: Path) -> bool:
        return (folder / "trainer_state.json").is_file()

    if not whole(last):
        for candidate in (partial, old):
            if whole(candidate):
                shutil.rmtree(last, ignore_errors=True)
                candidate.rename(last)
                break
    if whole(last):
        shutil.rmtree(old, ignore_errors=True)
        return last
    return None


def _differences(now: dict, then: dict, kind: str) -> list[str]:
    """'name: then -> now' for each field that differs (long values, like query lists, by size)."""

    def shown(value) -> str:
        return f"{len(value)} items" if isinstance(value, list) and len(value) > 6 else json.dumps(value)

    return [
        f"{kind} {key}: {shown(then.get(key))} -> {shown(now.get(key))}"
        for key in sorted(set(now) | set(then))
        if now.get(key) != then.get(key)
    ]
