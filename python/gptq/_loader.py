"""Loads the native library, after checking it was built for the torch that is installed.

A C++ extension compiled against one torch release does not load into another: the symptom is an
``undefined symbol`` error from the dynamic linker, which says nothing useful. The build records the
torch version and C++ ABI it used in ``_build_info.json``; we compare before loading anything native.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
REBUILD_HINT = (
    "Rebuild gptq against the installed torch, from the gptq source tree:\n"
    "    pip install --no-build-isolation --no-deps --force-reinstall .\n"
    "(--no-build-isolation makes the build use the torch you import, not a fresh copy)."
)


def read_build_info() -> dict:
    path = _HERE / "_build_info.json"
    if not path.exists():
        raise ImportError(
            f"gptq: {path} is missing, so this is not a built copy of gptq (a source checkout on "
            f"sys.path?).\n{REBUILD_HINT}"
        )
    return json.loads(path.read_text())


def check_torch(info: dict) -> None:
    built = info["torch_version"]
    running = torch.__version__
    if built != running:
        raise ImportError(
            f"gptq was built against torch {built} (CUDA {info['torch_cuda_version'] or 'none'}), "
            f"but torch {running} (CUDA {torch.version.cuda or 'none'}) is installed.\n{REBUILD_HINT}"
        )
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    if abi != int(info["cxx11_abi"]):
        raise ImportError(
            f"gptq was built with _GLIBCXX_USE_CXX11_ABI={info['cxx11_abi']} but this torch uses {abi}.\n"
            f"{REBUILD_HINT}"
        )


def load():
    info = read_build_info()
    check_torch(info)
    from . import _C  # noqa: PLC0415  (loads libgptq, which registers torch.ops.gptq)

    return _C, info
