"""A tiny random Qwen3 model and byte-level BPE tokenizer built in code: unit tests run offline in milliseconds."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "Here are some passages: Please find information that is relevant to the following query in the passages above.",
    "Query: N/A the a an of in on at to is are was were be been what how why when who which where",
    "fleas live up to a year; their life cycle depends on the host. goldfish grow with the size of their tank.",
    "wifi and bluetooth are wireless technologies with different range and power. the united states entered",
    "world war one in 1917. 0123456789 [ ] ( ) , . ; : ! ? - ' \" \n",
]


def tiny_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


DOCS = [
    "wifi and bluetooth are wireless technologies",
    "the united states entered world war one in 1917",
    "fleas live up to a year on the host",
    "goldfish grow with the size of their tank",
    "what is the range of wifi",
]
"""five short passages the tiny tokenizer knows, for tests and device checks."""
FLEA_QUERY = "how long do fleas live"

FAMILIES = ("qwen3", "llama", "mistral", "gemma3", "phi3")
"""the decoder families the engine is tested on: GQA with q/k norms, plain GQA, a sliding window shorter than the
prompt, alternating sliding and full layers (scaled embeddings, q/k norms), and a fused qkv projection."""
TINY_WINDOW = 40
"""the sliding window of the tiny Mistral and Gemma 3: far shorter than any test prompt."""


def tiny_config(family: str = "qwen3", num_layers: int = 4, num_heads: int = 4, kv_heads: int = 2, max_positions=2048):
    """A small config of a real family (random weights follow from it)."""
    import transformers

    shared = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if family == "qwen3":
        return transformers.Qwen3Config(head_dim=16, **shared)
    if family == "llama":
        return transformers.LlamaConfig(head_dim=16, **shared)
    if family == "mistral":
        return transformers.MistralConfig(head_dim=16, sliding_window=TINY_WINDOW, **shared)
    if family == "gemma3":
        kinds = ["sliding_attention", "full_attention"] * (num_layers // 2) + ["sliding_attention"] * (num_layers % 2)
        return transformers.Gemma3TextConfig(
            head_dim=16, sliding_window=TINY_WINDOW, layer_types=kinds, query_pre_attn_scalar=16, **shared
        )
    if family == "phi3":
        return transformers.Phi3Config(**shared)
    raise ValueError(f"unknown tiny family {family!r}: one of {FAMILIES}")


def tiny_model(
    num_layers: int = 4,
    num_heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 2048,
    seed: int = 0,
    family: str = "qwen3",
):
    import torch
    from transformers import AutoModelForCausalLM

    from headrank.capture import IMPLEMENTATION, register_attention

    register_attention()
    torch.manual_seed(seed)
    config = tiny_config(family, num_layers, num_heads, kv_heads, max_positions)
    config._attn_implementation = IMPLEMENTATION
    model = AutoModelForCausalLM.from_config(config).eval()
    model.config._attn_implementation = IMPLEMENTATION
    # random init is too flat to rank anything; sharper queries and keys give peaked, testable attention
    with torch.no_grad():
        for layer in model.model.layers:
            attention = layer.self_attn
            for name in ("q_proj", "k_proj", "qkv_proj"):
                if hasattr(attention, name):
                    getattr(attention, name).weight.mul_(8)
    return model


def save_tiny(folder: str | Path, **kwargs) -> Path:
    """Write the tiny model and tokenizer as a Hugging Face folder (for CLI and loading tests)."""
    folder = Path(folder)
    tiny_model(**kwargs).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_backbone(**kwargs):
    from headrank.backbone import Backbone

    return Backbone(model=tiny_model(**kwargs), tokenizer=tiny_tokenizer(), source="tiny", fingerprint="tiny")


def lexical_model(num_heads: int = 2, sharpness: float = 3.0, seed: int = 0):
    """One layer whose heads attend from each token to the same token anywhere, whatever its position.

    q and k share one projection and rotary embedding is switched off, so query words attend to their
    occurrences in the passages: a model with a known right answer for ranking tests."""
    import torch

    model = tiny_model(num_layers=1, num_heads=num_heads, kv_heads=num_heads, seed=seed)
    attention = model.model.layers[0].self_attn
    with torch.no_grad():
        attention.k_proj.weight.copy_(attention.q_proj.weight)
        attention.q_norm.weight.fill_(sharpness)
        attention.k_norm.weight.fill_(sharpness)
        model.model.rotary_emb.inv_freq.zero_()
        model.model.rotary_emb.original_inv_freq.zero_()
    return model
