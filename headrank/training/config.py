"""Every knob of a training run in one frozen record, written into the artifact as it was used."""

from __future__ import annotations

from dataclasses import dataclass

from headrank.engine.precision import DTYPE_CHOICES

CHOICES: dict[str, tuple[str, ...]] = {
    "pairs": ("alps", "random"),
    "adapters": ("query", "all"),
    "order": ("random", "inference"),
    "cache_dtype": ("model", *DTYPE_CHOICES[1:]),
}
"""the values a choice field may take: what the config checks and what `headrank train` offers."""


@dataclass(frozen=True)
class TrainConfig:
    loss: str = "dpo"
    """a name in `objectives.OBJECTIVES` (checked where the trainer looks it up)."""
    beta: float = 1.0
    """sharpness of the preference loss, in units of the list's reference score spread (`standardise`)."""
    standardise: bool = True
    """divide score differences by the std of the frozen model's scores over the list, so beta = 1 is not flat
    (calibrated scores of middle passages differ by ~0.05)."""
    gamma: float = 0.05
    """weight of the normalised entropy of softmax(s / tau) (sharpens the score distribution)."""
    eta: float = 0.05
    """weight of the variance of middle-zone scores (spreads them)."""
    tau: float = 1.0
    kl: float = 0.0
    """weight of KL(reference || trained) between the list distributions softmax(s / spread): holds the whole
    trained order near the untrained one, which ALPS pairs alone leave free to drift."""
    lr: float = 2e-4
    epochs: int = 2
    lists_per_step: int = 1
    """lists whose gradients are accumulated into one optimizer step."""
    warmup: float = 0.1
    """share of the optimizer steps with a linear warm-up; the rate then decays linearly to zero."""
    list_size: int = 20
    max_pairs: int = 32
    margin: float = 0.1
    """a pair is hard when s(d+) - s(d-) (standardised when `standardise`) is below this."""
    middle_boost: float = 2.0
    """sampling weight of pairs with a passage in the middle half of the input."""
    pairs: str = "alps"
    adapters: str = "query"
    """query: LoRA acts on the query span only (passages encoded by the frozen base, prefix cached);
    all: on every token (gradient through the passage pass; merged into the weights at inference)."""
    order: str = "random"
    """input order while training: random (one seeded shuffle per list and `shuffles` variant) or inference
    (the ranker's own order, reverse first stage by default, where position carries the first stage's prior)."""
    shuffles: int = 2
    """distinct shuffles per list for order=random, cycled by epoch (each is encoded once and cached)."""
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    weight_decay: float = 0.0
    """AdamW decay of the LoRA weights, i.e. towards the frozen base."""
    lora_targets: tuple[str, ...] = ()
    """attention modules LoRA adapts (empty: the family's attention projections, e.g. q/k/v/o or Phi-3's fused qkv)."""
    grad_clip: float = 1.0
    eval_every: int = 10
    """optimizer steps between two evaluations of the learning curves (and checkpoints)."""
    patience: int = 0
    """stop after this many curve points without a better validation nDCG@10 (0: run every step); either way
    the adapter kept is the one of the best validation point."""
    train_sample: int = 24
    """training lists evaluated for the training curve (a fixed seeded sample)."""
    validation: float = 0.2
    """share of each dataset's queries held out for validation (by query, seeded)."""
    cache_dtype: str = "model"
    """dtype in which frozen prefix keys/values are kept between steps."""
    seed: int = 0

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.kl < 0 or self.weight_decay < 0 or self.patience < 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError("kl, weight_decay and patience must be >= 0 and lora_dropout in [0, 1)")
        for name in ("beta", "lr", "tau"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.epochs < 1 or self.list_size < 2 or self.max_pairs < 1 or self.lists_per_step < 1:
            raise ValueError("epochs >= 1, list_size >= 2, max_pairs >= 1 and lists_per_step >= 1 are needed")
        if not 0 <= self.warmup < 1 or not 0 < self.validation < 1:
            raise ValueError("warmup must be in [0, 1) and validation in (0, 1)")
        if self.eval_every < 1 or self.shuffles < 1 or self.train_sample < 1:
            raise ValueError("eval_every, shuffles and train_sample must be at least 1")
