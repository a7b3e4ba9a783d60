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

    from headrank.engine.capture import IMPLEMENTATION, register_attention

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
    from headrank.engine.backbone import Backbone

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


QWEN25_CODER_1P5B = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
"""the file scripts/fetch_qwen25_coder_1p5b.sh caches under $HEADRANK_CACHE/models (never a test dependency)."""

_GGUF_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def save_tiny_gguf(path: str | Path, num_layers: int = 4, seed: int = 0):
    """Write the tiny Llama model as a GGUF file, as llama.cpp's converter would: q and k rows permuted for its
    rotary layout, the tiny BPE tokenizer in the metadata, the projections quantized to Q8_0 (norms and
    embeddings stay float32). Returns the model written, in float32, before quantization."""
    import json

    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, TokenType
    from gguf.quants import quantize

    model = tiny_model(num_layers=num_layers, seed=seed, family="llama")
    config, tokenizer = model.config, tiny_tokenizer()
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    special = {added.content for added in tokenizer.added_tokens_decoder.values() if added.special}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([TokenType.CONTROL if token in special else TokenType.NORMAL for token, _ in vocab])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    # a BOS id that is never added: transformers 5.0's GGUF tokenizer converter reads bos_token_id whenever an EOS
    # is given (AttributeError without one)
    writer.add_bos_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":  # tied: llama.cpp leaves `output.weight` out
            continue
        data = tensor.float().numpy()
        gguf_name = _gguf_name(name)
        if gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config.num_attention_heads if "attn_q" in gguf_name else config.num_key_value_heads
            data = data.reshape(heads, 2, data.shape[0] // heads // 2, *data.shape[1:])
            data = data.swapaxes(1, 2).reshape(tensor.shape)
        if data.ndim == 2 and gguf_name.startswith("blk."):
            writer.add_tensor(gguf_name, quantize(data, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def _gguf_name(name: str) -> str:
    """llama.cpp's tensor name for a transformers Llama parameter name."""
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if name in fixed:
        return fixed[name]
    _, _, layer, module = name.split(".", 3)
    part, suffix = module.rsplit(".", 1)
    return f"blk.{layer}.{_GGUF_LAYER[part]}.{suffix}"
