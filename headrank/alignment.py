"""Preference alignment in attention space: ALPS pairs, the DPO-style loss on head scores, the regularizer,
and a resumable LoRA training loop. The frozen base (adapters disabled) is the reference model."""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from headrank.data import CandidateList, Qrels
from headrank.prompt import ListwisePrompt, input_order
from headrank.ranker import HeadRanker, document_text
from headrank.scoring import PrefixCache, encode_prefix, query_attention, score_list

PAIR_MODES = ("alps", "random")


@dataclass(frozen=True)
class TrainConfig:
    beta: float = 1.0
    """sharpness of the preference loss."""
    gamma: float = 0.05
    """weight of the normalised entropy of softmax(s / tau) (sharpens the score distribution)."""
    eta: float = 0.05
    """weight of the variance of middle-zone scores (spreads them)."""
    tau: float = 1.0
    lr: float = 2e-4
    epochs: int = 2
    list_size: int = 20
    max_pairs: int = 32
    margin: float = 0.1
    """a pair is hard when s(d+) - s(d-) is below this (mis-ordered or close)."""
    middle_boost: float = 2.0
    """sampling weight of pairs with a passage in the middle half of the input."""
    pairs: str = "alps"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.pairs not in PAIR_MODES:
            raise ValueError(f"pairs must be one of {PAIR_MODES}, not {self.pairs!r}")
        for name in ("beta", "lr", "tau"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.epochs < 1 or self.list_size < 2 or self.max_pairs < 1:
            raise ValueError("epochs >= 1, list_size >= 2 and max_pairs >= 1 are needed")


def stable_seed(*parts) -> int:
    """A seed that is the same in every process (Python's str hash is salted per process)."""
    return zlib.crc32(":".join(map(str, parts)).encode())


def middle_zone(n: int) -> np.ndarray:
    """Input positions in the middle half of a list of n."""
    zone = np.zeros(n, dtype=bool)
    zone[n // 4 : n - n // 4] = True
    return zone


def alps_pairs(
    grades: np.ndarray, scores: np.ndarray, config: TrainConfig, rng: random.Random
) -> list[tuple[int, int]]:
    """Hard adjacent-level pairs (d+, d-) by input position: grades differ by exactly one; mis-ordered or
    close pairs first, middle-zone pairs over-sampled; filled up with the easy ones."""
    diff = grades[:, None] - grades[None, :]
    plus, minus = np.nonzero(diff == 1)
    if len(plus) == 0:
        return []
    zone = middle_zone(len(grades))
    weight = np.where(zone[plus] | zone[minus], config.middle_boost, 1.0)
    hard = scores[plus] - scores[minus] < config.margin
    chosen: list[int] = []
    for group in (np.nonzero(hard)[0], np.nonzero(~hard)[0]):
        chosen += _weighted_sample(list(group), weight[group], config.max_pairs - len(chosen), rng)
    return [(int(plus[i]), int(minus[i])) for i in chosen]


def random_pairs(grades: np.ndarray, config: TrainConfig, rng: random.Random) -> list[tuple[int, int]]:
    """The ablation: any pair with different grades, drawn uniformly."""
    plus, minus = np.nonzero(grades[:, None] > grades[None, :])
    picked = _weighted_sample(list(range(len(plus))), np.ones(len(plus)), config.max_pairs, rng)
    return [(int(plus[i]), int(minus[i])) for i in picked]


def _weighted_sample(items: list[int], weights: np.ndarray, k: int, rng: random.Random) -> list[int]:
    """k items without replacement, each draw proportional to weight (Efraimidis-Spirakis keys)."""
    if k <= 0 or not items:
        return []
    keys = [rng.random() ** (1.0 / w) for w in weights]
    return [items[i] for i in sorted(range(len(items)), key=lambda i: -keys[i])[:k]]


def preference_loss(
    s_theta: torch.Tensor, s_ref: torch.Tensor, pairs: Sequence[tuple[int, int]], beta: float
) -> torch.Tensor:
    """-log sigma(beta * [(s_theta(d+) - s_ref(d+)) - (s_theta(d-) - s_ref(d-))]), averaged over pairs."""
    plus = torch.tensor([p for p, _ in pairs])
    minus = torch.tensor([m for _, m in pairs])
    margin = (s_theta[plus] - s_ref[plus]) - (s_theta[minus] - s_ref[minus])
    return -F.logsigmoid(beta * margin).mean()


def distribution_regularizer(scores: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """gamma * H(softmax(s / tau)) / log n - eta * Var(s_mid)."""
    p = torch.softmax(scores / config.tau, dim=-1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum() / np.log(len(scores))
    mid = scores[torch.from_numpy(middle_zone(len(scores)))]
    variance = mid.var() if len(mid) > 1 else scores.new_zeros(())
    return config.gamma * entropy - config.eta * variance


@dataclass
class TrainingList:
    qid: str
    query: str
    texts: list[str]
    grades: np.ndarray


def training_lists(lists: Sequence[CandidateList], qrels: Qrels, size: int) -> list[TrainingList]:
    """Lists with at least one adjacent-grade pair: the others teach the preference loss nothing."""
    out = []
    for lst in lists:
        head = lst.head(size)
        judged = qrels.get(lst.qid, {})
        grades = np.asarray([judged.get(d, 0) for d in head.docids()], dtype=float)
        if (grades[:, None] - grades[None, :] == 1).any():
            texts = [document_text(d, i) for i, d in enumerate(head.documents())]
            out.append(TrainingList(lst.qid, lst.query, texts, grades))
    return out


class PreferenceTrainer:
    """LoRA on the layers up to the truncation depth of `ranker`, trained on its selected heads' scores."""

    def __init__(self, ranker: HeadRanker, config: TrainConfig):
        from peft import LoraConfig, get_peft_model

        self.ranker, self.config = ranker, config
        self.model = ranker.model  # the LoRA layers are injected into this very model
        torch.manual_seed(config.seed)
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(config.lora_targets),
            layers_to_transform=list(range(ranker.depth)),
        )
        self.peft = get_peft_model(self.model, lora)
        # query-side adapters: passages stay encoded by the frozen base, so the reference and the trained
        # model share one prefix pass in spirit and the gradient needs no pass back through the passages
        ranker.prefix_context = self.peft.disable_adapter
        self.params = [p for p in self.peft.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=0.0)
        self.history: list[dict] = []
        self.epoch = 0

    def _prompt(self, item: TrainingList, epoch: int) -> tuple[ListwisePrompt, np.ndarray]:
        """Shuffled input order per list and epoch, so the heads cannot learn position."""
        builder = self.ranker.builder
        order = input_order(len(item.texts), "random", seed=stable_seed(self.config.seed, epoch, item.qid))
        prompt = builder.build(item.query, builder.encode_passages(item.texts), order)
        return prompt, item.grades[order]

    def _scores(self, prompt: ListwisePrompt, prefix: PrefixCache) -> torch.Tensor:
        heads, scoring = self.ranker.heads, self.ranker.config.scoring
        attention = query_attention(self.model, prompt, heads, scoring.calibrate, prefix=prefix)
        return score_list(attention, prompt, heads, scoring).scores

    def reference_and_current(self, prompt: ListwisePrompt) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the frozen base (no grad) and of the adapted model, over one shared prefix pass."""
        prefix = encode_prefix(self.model, prompt, self.ranker.prefix_context)
        with torch.no_grad(), self.peft.disable_adapter():
            s_ref = self._scores(prompt, prefix)
        return s_ref, self._scores(prompt, prefix)

    def step(self, item: TrainingList, epoch: int, rng: random.Random) -> dict | None:
        start = time.perf_counter()
        prompt, grades = self._prompt(item, epoch)
        self.peft.train()
        s_ref, s_theta = self.reference_and_current(prompt)
        current = s_theta.detach().numpy()
        if self.config.pairs == "alps":
            pairs = alps_pairs(grades, current, self.config, rng)
        else:
            pairs = random_pairs(grades, self.config, rng)
        if not pairs:
            return None
        preference = preference_loss(s_theta, s_ref, pairs, self.config.beta)
        regularizer = distribution_regularizer(s_theta, self.config)
        loss = preference + regularizer
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        self.peft.eval()
        plus = torch.tensor([p for p, _ in pairs])
        minus = torch.tensor([m for _, m in pairs])
        return {
            "loss": loss.item(),
            "preference": preference.item(),
            "regularizer": regularizer.item(),
            "pair_accuracy": float((s_theta[plus] > s_theta[minus]).float().mean()),
            "pairs": len(pairs),
            "seconds": time.perf_counter() - start,
        }

    def train(self, items: Sequence[TrainingList], out: Path | None = None, progress: bool = True) -> list[dict]:
        """Run the remaining epochs; a checkpoint after each lets `resume` continue with no lost epoch."""
        while self.epoch < self.config.epochs:
            epoch = self.epoch
            rng = random.Random(stable_seed(self.config.seed, epoch))
            order = list(range(len(items)))
            rng.shuffle(order)
            bar = tqdm(order, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not progress, unit="list")
            running = []
            for index in bar:
                record = self.step(items[index], epoch, rng)
                if record is None:
                    continue
                record.update(epoch=epoch + 1, qid=items[index].qid)
                self.history.append(record)
                running.append(record["loss"])
                bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
            self.epoch += 1
            if out is not None:
                self.save_checkpoint(out / f"checkpoint-{self.epoch}")
        return self.history

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(self.peft).items()}

    def save_checkpoint(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.adapter_state(), folder / "adapter.safetensors")
        state = self.optimizer.state_dict()
        tensors = {f"{i}.{k}": v.contiguous() for i, s in state["state"].items() for k, v in s.items()}
        save_file(tensors, folder / "optimizer.safetensors")
        meta = {
            "epoch": self.epoch,
            "history": self.history,
            "config": asdict(self.config),
            "param_groups": state["param_groups"],
        }
        (folder / "trainer_state.json").write_text(json.dumps(meta, indent=1) + "\n")

    def resume(self, out: Path) -> bool:
        """Load the latest checkpoint under `out`; False when there is none."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if not checkpoints:
            return False
        folder = checkpoints[-1]
        meta = json.loads((folder / "trainer_state.json").read_text())
        set_peft_model_state_dict(self.peft, load_file(folder / "adapter.safetensors"))
        flat = load_file(folder / "optimizer.safetensors")
        state: dict[int, dict] = {}
        for key, value in flat.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.epoch, self.history = meta["epoch"], meta["history"]
        return True


def plot_history(history: Sequence[dict], path: Path) -> None:
    """Loss and pair accuracy per step, with a moving average: the evidence of what training did."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("loss", "pair_accuracy")):
        values = np.asarray([h[key] for h in history])
        ax.plot(values, alpha=0.35, label="per list")
        window = max(1, min(20, len(values) // 5))
        if len(values) >= window:
            ax.plot(
                np.arange(window - 1, len(values)),
                np.convolve(values, np.ones(window) / window, "valid"),
                label=f"mean of {window}",
            )
        ax.set_xlabel("step (one list)")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_artifact(
    ranker: HeadRanker,
    config: TrainConfig,
    data_dir: Path,
    datasets: Sequence[str],
    out: Path,
    limit: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train on the named datasets and write the artifact (plus history and loss curve) to `out`."""
    from headrank.artifact import save_artifact
    from headrank.datasets import load_dataset

    items: list[TrainingList] = []
    for name in datasets:
        data = load_dataset(name, data_dir, depth=config.list_size)
        usable = training_lists(data.judged(), data.qrels, config.list_size)
        items += usable[:limit] if limit else usable
    if not items:
        raise ValueError("no training list has two candidates whose grades differ by one")
    trainer = PreferenceTrainer(ranker, config)
    if resume and not trainer.resume(out / "checkpoints"):
        raise ValueError(f"--resume: no checkpoint under {out / 'checkpoints'}")
    history = trainer.train(items, out / "checkpoints", progress)
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    if history:
        plot_history(history, out / "loss_curve.png")
    last = [h for h in history if h["epoch"] == config.epochs]
    training = {
        **asdict(config),
        "steps": len(history),
        "final_epoch_loss": float(np.mean([h["loss"] for h in last])) if last else None,
        "final_epoch_pair_accuracy": float(np.mean([h["pair_accuracy"] for h in last])) if last else None,
    }
    data = {"datasets": list(datasets), "lists": len(items), "qids": [i.qid for i in items]}
    return save_artifact(out, ranker, trainer.peft, training, data)
