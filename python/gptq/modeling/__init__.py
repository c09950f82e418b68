"""Whole-model GPTQ: AutoGPTQ's API over any transformers decoder (see auto.py, quantizer.py)."""

from .auto import AutoGPTQForCausalLM, GPTQForCausalLM, post_init_model, resolve_backend
from .layout import LayoutError, register_layout

BaseGPTQForCausalLM = GPTQForCausalLM  # AutoGPTQ's name


def exllama_set_max_input_length(model, max_input_length: int):
    """AutoGPTQ sized a scratch buffer of its ExLlama act-order kernel with this; gptq's kernels need
    no such buffer, so the model is returned unchanged."""
    return model


__all__ = ["AutoGPTQForCausalLM", "BaseGPTQForCausalLM", "GPTQForCausalLM", "LayoutError",
           "exllama_set_max_input_length", "post_init_model", "register_layout", "resolve_backend"]
