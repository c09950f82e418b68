"""gptq: GPTQ quantization for large language models, with fast CUDA kernels, on libtorch.

The native library registers its operators under ``torch.ops.gptq``; this package wraps them.
"""

from __future__ import annotations

from pathlib import Path as _Path

from ._loader import load as _load

_C, _BUILD_INFO = _load()
__version__: str = _BUILD_INFO["version"]

from .env import env  # noqa: E402
from .format import (  # noqa: E402
    CHECKPOINT_FORMATS,
    dequantize,
    pack_cols,
    pack_rows,
    unpack_cols,
    unpack_rows,
)
from .config import BaseQuantizeConfig  # noqa: E402
from .quantize import (  # noqa: E402
    HessianAccumulator,
    QuantizedWeight,
    convert_qzeros,
    quantize_weight,
    rtn_quantize_weight,
)

cmake_prefix_path: str = str(_Path(__file__).resolve().parent / "share" / "cmake")
"""Folder to add to CMAKE_PREFIX_PATH so that C++ projects find this copy with find_package(gptq)."""

__all__ = [
    "BaseQuantizeConfig",
    "CHECKPOINT_FORMATS",
    "HessianAccumulator",
    "QuantizedWeight",
    "__version__",
    "cmake_prefix_path",
    "convert_qzeros",
    "dequantize",
    "env",
    "pack_cols",
    "pack_rows",
    "quantize_weight",
    "rtn_quantize_weight",
    "unpack_cols",
    "unpack_rows",
]

# ---- model API (AutoGPTQ's names); imported on first use so `import gptq` does not load transformers
_MODELING_EXPORTS = ("AutoGPTQForCausalLM", "BaseGPTQForCausalLM", "GPTQForCausalLM", "exllama_set_max_input_length",
                     "register_layout")


def __getattr__(name: str):
    if name in _MODELING_EXPORTS:
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'gptq' has no attribute {name!r}")


__all__ += list(_MODELING_EXPORTS)
