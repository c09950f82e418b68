"""Torch modules that hold GPTQ-packed weights."""

from .backends import BACKENDS, Backend, available_backends, select_backend
from .qlinear import QuantLinear

__all__ = ["BACKENDS", "Backend", "QuantLinear", "available_backends", "select_backend"]
