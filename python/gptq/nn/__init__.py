"""Torch modules that hold GPTQ-packed weights."""

from .backends import ALIASES, BACKENDS, Backend, available_backends, post_init_model, select_backend
from .qlinear import QuantLinear

__all__ = ["ALIASES", "BACKENDS", "Backend", "QuantLinear", "available_backends", "post_init_model",
           "select_backend"]
