"""LoRA adapters on the backbone: the one module that calls peft. Training injects one, an artifact attaches
its saved one, an every-token adapter is merged into the weights, and a query-span one is switched off
around the passages' pass."""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by whoever holds a model: importing this module (artifacts) needs none
    import torch


@dataclass
class Adapter:
    """A LoRA adapter injected into a model (peft's PeftModel, which wraps the same modules in place)."""

    peft: object

    def off(self) -> AbstractContextManager:
        """The frozen base for the length of a `with`: the reference model, and the passages' encoder of a
        query-span adapter."""
        return self.peft.disable_adapter()

    def merged(self) -> torch.nn.Module:
        """The base model with the adapter folded into its weights (free at inference)."""
        return self.peft.merge_and_unload()

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        """LoRA dropout on (training) or off (curve points, inference)."""
        self.peft.train(mode)

    def state(self) -> dict[str, torch.Tensor]:
        """The adapter's weights alone, detached copies (a checkpoint, the best validation state)."""
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(self.peft).items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.peft, state)

    def save(self, folder: Path, base_model: str) -> None:
        """peft's safetensors and config, naming `base_model` (not this machine's cache path), without peft's
        model card template, which says nothing about this ranker."""
        for config in self.peft.peft_config.values():
            config.base_model_name_or_path = base_model
        self.peft.save_pretrained(folder, safe_serialization=True)
        readme = folder / "README.md"
        if readme.exists():
            readme.unlink()


def inject_lora(
    model: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: list[str], depth: int
) -> Adapter:
    """Fresh LoRA layers (B = 0, so the model is unchanged until trained) in `targets` of the first `depth` layers."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, layers_to_transform=list(range(depth))
    )
    return Adapter(get_peft_model(model, config))


def load_adapter(model: torch.nn.Module, folder: Path) -> Adapter:
    """The adapter saved in `folder`, injected into `model`, in eval mode."""
    from peft import PeftModel

    with warnings.catch_warnings():  # peft reads a property transformers deprecated: nothing the user can act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return Adapter(PeftModel.from_pretrained(model, folder).eval())
