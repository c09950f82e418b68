"""Tiny random decoders of each supported family, built from transformers config classes (no
downloads), and a byte-level tokenizer, for the pipeline tests.

Sizes: hidden 64, 2 layers, 4 heads (2 KV heads where the family has GQA), MLP 128, vocabulary 256,
so every linear satisfies the packed format (in_features % 32 == 0) and runs in milliseconds.
Float weights are rounded through fp16 so that a checkpoint (fp16 on disk) reloads them exactly.
"""

from __future__ import annotations

import torch

V, H, I, L = 256, 64, 128, 2


def _configs():
    import transformers as t

    common = dict(vocab_size=V, max_position_embeddings=128)
    return {
        "llama": lambda: t.LlamaConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=4,
                                       num_key_value_heads=2, **common),
        "mistral": lambda: t.MistralConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                                           num_attention_heads=4, num_key_value_heads=2, sliding_window=None, **common),
        "qwen2": lambda: t.Qwen2Config(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=4,
                                       num_key_value_heads=2, **common),
        "qwen3": lambda: t.Qwen3Config(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=4,
                                       num_key_value_heads=2, head_dim=16, **common),
        "phi3": lambda: t.Phi3Config(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=4,
                                     num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                                     eos_token_id=2, **common),
        "gemma": lambda: t.GemmaConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=4,
                                       num_key_value_heads=2, head_dim=16, **common),
        "opt": lambda: t.OPTConfig(hidden_size=H, ffn_dim=I, num_hidden_layers=L, num_attention_heads=4,
                                   word_embed_proj_dim=H, **common),
        "gpt2": lambda: t.GPT2Config(n_embd=H, n_layer=L, n_head=4, n_positions=128, vocab_size=V,
                                     bos_token_id=1, eos_token_id=2),
        "falcon": lambda: t.FalconConfig(hidden_size=H, num_hidden_layers=L, num_attention_heads=4, vocab_size=V),
        "bloom": lambda: t.BloomConfig(hidden_size=H, n_layer=L, n_head=4, vocab_size=V),
        "gpt_neox": lambda: t.GPTNeoXConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                                            num_attention_heads=4, **common),
        "mixtral": lambda: t.MixtralConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                           num_experts_per_tok=2, **common),
        "qwen2_moe": lambda: t.Qwen2MoeConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                                              num_attention_heads=4, num_key_value_heads=2, num_experts=4,
                                              num_experts_per_tok=2, moe_intermediate_size=64,
                                              shared_expert_intermediate_size=64, **common),
    }


FAMILIES = sorted(_configs())


def tiny_model(family: str, seed: int = 0, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _configs()[family]()
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():
            # random weights of a realistic scale (init std 0.02 makes every layer nearly identity)
            if p.dim() >= 2:
                p.normal_(0, 0.15)
            p.copy_(p.half().float())
    return model.eval()


def calibration(n: int = 6, length: int = 24, seed: int = 1, pad_last: bool = True) -> list[dict]:
    """`n` random token sequences; the last one shorter (padded in a batch) when `pad_last`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        n_tok = length - 9 if (pad_last and i == n - 1) else length
        ids = torch.randint(3, V, (n_tok,), generator=g)
        out.append({"input_ids": ids.tolist(), "attention_mask": [1] * n_tok})
    return out


def probe(seed: int = 2, batch: int = 2, length: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, (batch, length), generator=g)


def byte_tokenizer():
    """A byte-level tokenizer (256 ids) built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=alphabet[0], pad_token=alphabet[0])
