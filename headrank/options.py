"""The model flags of the command line and the one decision of which reranker they name, and with what.

Every command and benchmark that loads a reranker from flags goes through `RankerOptions` and
`headrank.methods.plan_method`: a flag either reaches the loader or is refused with the reason, never dropped.
Importing this module loads no model and no torch."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from headrank.engine import defaults
from headrank.engine.batching import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS
from headrank.engine.precision import DTYPE_CHOICES
from headrank.engine.prompt import ORDERS

FLAGS = {
    "model": "--model",
    "heads": "--heads",
    "artifact": "--artifact",
    "dense_model": "--dense-model",
    "dtype": "--dtype",
    "device": "--device",
    "order": "--order",
    "no_calibration": "--no-calibration",
    "token_mask": "--token-mask",
    "no_truncate": "--no-truncate",
    "max_passage_tokens": "--max-passage-tokens",
    "max_passage_words": "--max-passage-words",
    "max_length": "--max-length",
    "max_batch_tokens": "--max-batch-tokens",
    "merge": "--merge",
    "slide_size": "--slide-size",
    "slide_step": "--slide-step",
}
"""each model option's flag, by its argparse dest."""


@dataclass(frozen=True)
class RankerOptions:
    """The model flags as parsed; `given` names the ones set on the command line, so that one the chosen
    reranker cannot use is refused instead of ignored."""

    model: str = defaults.MODEL
    heads: str | None = None
    artifact: str | None = None
    dense_model: str | None = None
    dtype: str = defaults.DTYPE
    device: str = defaults.DEVICE
    order: str = defaults.ORDER
    no_calibration: bool = False
    token_mask: bool = False
    no_truncate: bool = False
    max_passage_tokens: int | None = defaults.MAX_PASSAGE_TOKENS
    max_passage_words: int | None = None
    max_length: int | None = None
    max_batch_tokens: int | None = None
    merge: str = defaults.MERGE
    """how a list split into windows is ranked, with the sliding windows' size and step (RankerConfig's
    fields of the same names)."""
    slide_size: int = defaults.SLIDE_SIZE
    slide_step: int = defaults.SLIDE_STEP
    given: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RankerOptions:
        values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name != "given" and hasattr(args, f.name)}
        return cls(**values, given=frozenset(getattr(args, "given", ())) & set(FLAGS))


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    heads: bool = True,
    artifact: bool = False,
    truncate: bool = True,
    heads_help: str = "",
) -> None:
    """The model group; `heads`, `artifact` and `truncate` leave out what a command cannot use (select-heads
    scores every head, so it has no --heads and nothing to truncate)."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=RankerOptions.model, help="HF hub id, local folder, .gguf file, or 'embedded'"
    )
    if heads:
        group.add_argument(
            "--heads",
            default=None,
            help=heads_help
            or "'all' (ICR), 'layer-head,...', or a .json/.yaml head-set file (default with --model embedded: "
            "the committed trained HeadRank; with another model: all heads)",
        )
    if artifact:
        group.add_argument("--artifact", help="a trained artifact folder (fixes its base model, heads and prompt)")
    group.add_argument(
        "--dtype",
        default=RankerOptions.dtype,
        choices=DTYPE_CHOICES,
        help="auto: bfloat16 where the CPU (AVX512-BF16/AMX) or GPU runs it natively, else float32 "
        "(select-heads and train: float32, so that what they choose does not depend on the machine)",
    )
    group.add_argument("--device", default=RankerOptions.device)
    group.add_argument(
        "--order",
        default=RankerOptions.order,
        choices=ORDERS,
        help="input order of the passages (reverse: best first-stage passage nearest the query)",
    )
    group.add_argument("--no-calibration", action="store_true", help="skip the N/A calibration pass")
    group.add_argument("--token-mask", action="store_true", help="ICR's mean-2sigma token mask")
    if truncate:
        group.add_argument("--no-truncate", action="store_true", help="run every layer even with a head subset")
    group.add_argument("--max-passage-tokens", type=int, default=RankerOptions.max_passage_tokens)
    group.add_argument("--max-passage-words", type=int, default=None)
    group.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per prompt (default: the model's); a longer list is ranked in windows, as --merge says",
    )
    group.add_argument(
        "--merge",
        default=RankerOptions.merge,
        choices=defaults.MERGES,
        help="how a list that does not fit --max-length is ranked: sliding (RankGPT's sliding windows from the "
        "bottom of the list up, each one forward pass), tournament (each window's leaders meet in a final window) "
        "or scaled (each window's scores as they are); docs/long-lists.md",
    )
    group.add_argument(
        "--slide-size", type=int, default=RankerOptions.slide_size, help="passages of a sliding window (--merge)"
    )
    group.add_argument(
        "--slide-step",
        type=int,
        default=RankerOptions.slide_step,
        help="passages a sliding window moves up by, below --slide-size",
    )
    group.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help=f"padded tokens per forward pass when prompts are batched (default: {CPU_BATCH_TOKENS} on a CPU, one "
        f"prompt per pass; {GPU_BATCH_TOKENS} on a GPU); a prompt longer than this runs alone",
    )


def config_options(
    parser: argparse.ArgumentParser,
    defaults: object,
    helps: dict[str, str],
    choices: dict[str, tuple] | None = None,
    dest: Callable[[str], str] = str,
) -> None:
    """One option per field of the config dataclass `defaults` named in `helps`: its type, default and choices
    come from the config, so a default is written once (a boolean field, False by default, is a switch)."""
    for name, help_text in helps.items():
        default, where = getattr(defaults, name), dest(name)
        flag = "--" + where.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=where, action="store_true", help=help_text)
        else:
            kind, choice = type(default), (choices or {}).get(name)
            parser.add_argument(flag, dest=where, type=kind, default=default, choices=choice, help=help_text)


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests that `argv` sets explicitly (a flag given with its default value counts as given): parsed a
    second time by a copy of the parser whose defaults are all suppressed."""
    shadow = copy.deepcopy(parser)
    _suppress_defaults(shadow)
    return set(vars(shadow.parse_args(argv))) - {"command", "func"}


def _suppress_defaults(parser: argparse.ArgumentParser) -> None:
    parser._defaults.clear()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _suppress_defaults(sub)
