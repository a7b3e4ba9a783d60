"""The rerankers an evaluation can name, and the one place that decides, from the model flags, which reranker
is loaded and with what: `headrank eval`, `rerank`, `serve`, `rerank-distributed` and the benchmarks share it.
Importing this module loads no model and no torch; `load_method` does."""

from __future__ import annotations

from dataclasses import dataclass, field

from headrank.options import FLAGS, RankerOptions

METHODS = {
    "headrank": "the trained HeadRank (--artifact, default: the committed one)",
    "bm25": "the first stage's order",
    "icr": "all heads of all layers, calibrated (ICR)",
    "qrhead": "a head subset chosen by nDCG (--heads)",
    "selected": "a head subset chosen by HeadRank's selection, untrained (--heads)",
    "rankgpt": "generative listwise reranking with the same model (sliding window 20/10)",
    "dense": "a sentence-transformers bi-encoder (--dense-model, default: the embedded MiniLM)",
}

_HEAD_RANKER = frozenset(FLAGS) - {"artifact", "dense_model"}
_WINDOWS = ("max_length", "max_batch_tokens", "merge", "slide_size", "slide_step")
"""the flags of how a list is cut into prompts and batched: the caller's for every head ranker."""
USES: dict[str, tuple[frozenset[str], str]] = {
    "bm25": (frozenset(), "bm25 keeps the first stage's order and loads no model"),
    "dense": (frozenset({"dense_model", "device"}), "dense scores with a sentence-transformers bi-encoder"),
    "rankgpt": (
        frozenset({"model", "dtype", "device", "max_passage_tokens"}),
        "rankgpt generates rankings with the whole model (sliding windows of 20): it reads no heads or attention",
    ),
    "headrank": (
        frozenset({"model", "artifact", "dtype", "device", "no_truncate", *_WINDOWS}),
        "a trained artifact fixes the base model, heads, prompt and scoring it was trained with",
    ),
    "icr": (_HEAD_RANKER - {"heads"}, "icr reads every head (--heads all, or a subset with --method selected)"),
    "qrhead": (_HEAD_RANKER, ""),
    "selected": (_HEAD_RANKER, ""),
}
"""the flags each method uses, and why it has no use for the others."""


@dataclass(frozen=True)
class MethodPlan:
    """What `load_method` will build: the loader and every argument it gets (no model loaded yet)."""

    method: str
    loader: str
    kwargs: dict = field(default_factory=dict)


def method_for(options: RankerOptions) -> str:
    """The method of a command that has no --method (rerank, serve, rerank-distributed): an artifact is
    HeadRank; no --heads with the embedded model is the committed HeadRank; 'all' (or another model without
    --heads) is ICR; a head subset is that subset untrained."""
    if options.artifact or _is_artifact(options.model):
        return "headrank"
    if options.heads is None:
        from headrank.engine.backbone import EMBEDDED, same_model

        return "headrank" if same_model(options.model, EMBEDDED) else _shipped_or_icr(options.model)
    return "icr" if options.heads == "all" else "selected"


def plan_method(method: str, options: RankerOptions) -> MethodPlan:
    """Check that every given flag applies to `method` (a ValueError names those that do not, and why) and
    say what will be loaded."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: known are {', '.join(METHODS)}")
    uses, why = USES[method]
    refused = sorted(name for name in options.given if name not in uses)
    if method == "icr" and options.heads == "all":
        refused = [name for name in refused if name != "heads"]
    if options.artifact and not _is_artifact(options.artifact):
        raise ValueError(f"--artifact {options.artifact} is not a trained artifact folder (no headrank.json)")
    model_is_artifact = _is_artifact(options.model)  # decided once: --model may name an artifact folder
    if method == "headrank" and "model" in options.given:
        if options.artifact and model_is_artifact:
            raise ValueError("give the artifact once: --artifact or --model ARTIFACT_FOLDER, not both")
        if not model_is_artifact:
            _check_artifact_base(options.model, options.artifact)
    if refused:
        names = ", ".join(FLAGS[name] for name in refused)
        raise ValueError(f"{names} cannot apply to --method {method}: {why}")
    device = {"dtype": options.dtype, "device": options.device}
    if method == "bm25":
        return MethodPlan(method, "none")
    if method == "dense":
        from headrank.baselines.dense import EMBEDDED

        return MethodPlan(method, "dense", {"model": options.dense_model or EMBEDDED, "device": options.device})
    if method == "rankgpt":
        return MethodPlan(
            method, "rankgpt", {"model": options.model, **device, "max_passage_tokens": options.max_passage_tokens}
        )
    common = {
        **device,
        "truncate": not options.no_truncate,
        **{name: getattr(options, name) for name in _WINDOWS},
    }
    if method == "headrank":
        from headrank.artifact import DEFAULT_ARTIFACT

        folder = options.artifact or (options.model if model_is_artifact else str(DEFAULT_ARTIFACT))
        return MethodPlan(method, "artifact", {"folder": folder, **common})
    if method == "icr":
        heads = "all"
    elif options.heads is None and method == "selected" and (shipped := _shipped(options.model)):
        heads = str(shipped.heads)
    elif options.heads in (None, "all"):
        raise ValueError(f"--method {method} needs --heads (a head-set file from `headrank select-heads`)")
    else:
        heads = options.heads
    return MethodPlan(
        method,
        "heads",
        {
            "model": options.model,
            "heads": heads,
            **common,
            "calibrate": not options.no_calibration,
            "token_mask": options.token_mask,
            "order": options.order,
            "max_passage_tokens": options.max_passage_tokens,
            "max_passage_words": options.max_passage_words,
        },
    )


def load_method(method: str, options: RankerOptions | None = None):
    """The reranker `method` names, loaded as `plan_method` decides (None for bm25: the first stage's order)."""
    return load_plan(plan_method(method, options or RankerOptions()))


def reference_ranker(options: RankerOptions, heads: str):
    """The ranker heads are selected (`heads` "all") or trained on (a head-set file) with: every model option
    applies, in the reference dtype (`precision.reference_dtype`)."""
    from dataclasses import replace

    from headrank.engine.precision import reference_dtype

    options = replace(options, heads=heads, dtype=reference_dtype(options.dtype))
    return load_method("icr" if heads == "all" else "selected", options)


def check_plan(plan: MethodPlan) -> None:
    """Everything about a plan that can be refused before the first weight is read (a GGUF converted, a hub
    download begun): the model reference, the device, and that every head exists in the model."""
    if plan.loader in ("none", "dense"):
        return
    from headrank.engine.backbone import check_device, model_shape, resolve_source

    check_device(plan.kwargs["device"])
    if plan.loader == "artifact":
        from headrank.artifact import read_manifest

        resolve_source(read_manifest(plan.kwargs["folder"])["base_model"])
        return
    if plan.loader == "heads" and plan.kwargs["heads"] != "all":
        from headrank.heads.headset import HeadSet

        shape = model_shape(plan.kwargs["model"])
        if shape is not None:
            HeadSet.parse(plan.kwargs["heads"]).resolve(shape.num_layers, shape.num_heads)
    else:
        resolve_source(plan.kwargs["model"])


def load_plan(plan: MethodPlan):
    """Load what `plan` names, after `check_plan` (which the caller may have run earlier, before other work)."""
    check_plan(plan)
    kwargs = dict(plan.kwargs)
    if plan.loader == "none":
        return None
    if plan.loader == "dense":
        from headrank.baselines.dense import DenseReranker

        return DenseReranker.from_pretrained(kwargs["model"], device=kwargs["device"])
    if plan.loader == "rankgpt":
        from headrank.baselines.rankgpt import RankGPT, RankGPTConfig

        config = RankGPTConfig(max_passage_tokens=kwargs.pop("max_passage_tokens"))
        return RankGPT.from_pretrained(kwargs.pop("model"), **kwargs, config=config)
    from headrank.ranker import HeadRanker

    if plan.loader == "artifact":
        return HeadRanker.from_artifact(kwargs.pop("folder"), **kwargs)
    return HeadRanker.from_pretrained(kwargs.pop("model"), kwargs.pop("heads"), **kwargs)


def _check_artifact_base(model: str, artifact: str | None) -> None:
    """`--model` beside a HeadRank artifact may only name the model it was trained on (the default's: "embedded");
    any other model gets the ways to rerank with it."""
    from headrank.artifact import DEFAULT_ARTIFACT, read_manifest
    from headrank.engine.backbone import same_model

    folder = artifact or str(DEFAULT_ARTIFACT)
    base = read_manifest(folder)["base_model"]
    if same_model(model, base):
        return
    which = f"--artifact {folder}" if artifact else "the default HeadRank"
    raise ValueError(
        f"--model {model} is not the base of {which} (trained on {base!r}): an artifact runs only on its own base. "
        f"For {model}: --heads all (ICR, every head), --heads FILE (heads from `headrank select-heads --model "
        f"{model}`), --artifact DIR (an artifact trained on it), or `headrank reproduce --model {model}` (select "
        "and train one)"
    )


def _shipped(model: str):
    from headrank.heads.registry import shipped_heads

    return shipped_heads(model)


def _shipped_or_icr(model: str) -> str:
    """'selected' with the model's shipped heads (headrank.heads.registry), else 'icr', said on stderr."""
    if _shipped(model):
        return "selected"
    from headrank.heads.registry import say_fallback

    say_fallback(model)
    return "icr"


def _is_artifact(path: str | None) -> bool:
    from headrank.artifact import is_artifact

    return bool(path) and is_artifact(path)
