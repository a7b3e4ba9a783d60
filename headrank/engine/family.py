"""The one place that knows how a decoder family is laid out inside: its layers, embeddings, device, depth,
attention layer types and sliding windows, and the LoRA target modules. Everything else asks it, so a new
family (or a family that lays itself out differently) has one place to land."""

from __future__ import annotations

from dataclasses import dataclass

import torch

FULL = "full_attention"
SLIDING = "sliding_attention"
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj")
"""attention projections LoRA may adapt: separate q/k/v (Llama, Qwen, Mistral, Gemma) or fused qkv (Phi-3)."""


class FamilyError(ValueError):
    """A model whose layout the engine cannot drive."""


@dataclass
class ModelFamily:
    """A causal LM as the engine sees it. Holds the model, never a copy of its state."""

    model: torch.nn.Module

    @property
    def config(self):
        return self.model.config

    @property
    def decoder(self) -> torch.nn.Module:
        """The decoder stack without the LM head (what every pass runs)."""
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        if decoder is None or not hasattr(decoder, "layers"):
            raise FamilyError(f"{type(self.model).__name__} has no decoder with a `layers` list")
        return decoder

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.decoder.layers

    @property
    def embeddings(self) -> torch.nn.Module:
        return self.decoder.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return self.embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embeddings.weight.dtype

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.num_heads

    @property
    def layer_types(self) -> list[str]:
        """Per layer: full or sliding attention (families without `layer_types` slide everywhere when they have a
        window, as Mistral does)."""
        types = getattr(self.config, "layer_types", None)
        if types:
            return list(types[: self.num_layers])
        return [SLIDING if self.window is not None else FULL] * self.num_layers

    @property
    def window(self) -> int | None:
        window = getattr(self.config, "sliding_window", None)
        if window is not None and getattr(self.config, "use_sliding_window", True) is False:
            return None
        return window

    def sliding_windows(self) -> list[int | None]:
        """The window each layer attends within (None: the whole context)."""
        return [self.window if kind == SLIDING else None for kind in self.layer_types]

    def lora_targets(self) -> list[str]:
        """The attention projections of this family, by module name, as peft's `target_modules` takes them."""
        attention = getattr(self.layers[0], "self_attn", None)
        names = [name for name in _PROJECTIONS if isinstance(getattr(attention, name, None), torch.nn.Linear)]
        if not names:
            raise FamilyError(f"{type(self.model).__name__}: no attention projection among {_PROJECTIONS}")
        return names

    def truncate(self, depth: int) -> None:
        """Keep only the first `depth` decoder layers: the layers after the deepest wanted head never run."""
        layers = self.layers
        if not 1 <= depth <= len(layers):
            raise ValueError(f"depth must be in 1..{len(layers)}, got {depth}")
        self.decoder.layers = layers[:depth]
        set_depth(self.config, depth)

    def run(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """One pass of the decoder with explicit positions and no cache; what the pass keeps is the capture's."""
        self.decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False)


def set_depth(config, depth: int) -> None:
    """A config (before or after loading) with `depth` layers: the load then builds and reads only those."""
    config.num_hidden_layers = depth
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:depth]
