"""``python -m gptq env`` / ``gptq.env()``: what gptq was built with and what this machine offers.

It says plainly which kernel families are compiled, for which GPU architectures, and whether they run
on the GPU present, so that a missing kernel is never a silent fallback.
"""

from __future__ import annotations

import platform
import sys

import torch


def collect() -> dict:
    """The environment report as a dict (see :func:`env` for the printed form)."""
    from . import _C, __version__

    info = _C.build_info()
    report: dict = {
        "gptq": __version__,
        "gptq_commit": info["git_commit"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "",
        "built_against_torch": info["torch_version"],
        "cxx11_abi": info["cxx11_abi"],
        "cuda_kernels_built": info["with_cuda"],
        "cuda_build_status": info["cuda_status"],
        "nvcc_at_build": info["nvcc_version"],
        "kernel_families": info["kernel_families"],
        "cuda_driver": _C.cuda_driver_version(),
        "gpus": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            usable = _C.usable_kernel_families(p.major, p.minor)
            report["gpus"].append(
                {
                    "index": i,
                    "name": p.name,
                    "capability": f"{p.major}.{p.minor}",
                    "memory_gib": round(p.total_memory / 2**30, 1),
                    "multiprocessors": p.multi_processor_count,
                    "usable_kernel_families": usable,
                }
            )
    return report


def env(file=None) -> dict:
    """Prints the environment report and returns it as a dict."""
    file = file or sys.stdout
    r = collect()
    lines = [
        f"gptq               {r['gptq']} (commit {r['gptq_commit']})",
        f"python             {r['python']} on {r['platform']}",
        f"torch              {r['torch']} (CUDA {r['torch_cuda'] or 'none'}); gptq built against {r['built_against_torch']}, cxx11 ABI {int(r['cxx11_abi'])}",
        f"CUDA kernels       {'built' if r['cuda_kernels_built'] else 'NOT built'}: {r['cuda_build_status']}",
        f"CUDA driver        {r['cuda_driver'] or 'none found'}",
    ]
    if r["kernel_families"]:
        fams = ", ".join(f"{k} (sm_{'/'.join(v)})" for k, v in sorted(r["kernel_families"].items()))
        lines.append(f"kernel families    {fams}")
    else:
        lines.append("kernel families    none compiled: every op runs on the CPU path")
    if not r["gpus"]:
        lines.append("GPUs               none visible to torch: ops run on the CPU")
    for g in r["gpus"]:
        usable = ", ".join(g["usable_kernel_families"]) or "NONE (no compiled arch runs on this GPU; rebuild with GPTQ_CUDA_ARCHS)"
        lines.append(
            f"GPU {g['index']}              {g['name']}, sm_{g['capability'].replace('.', '')}, {g['memory_gib']} GiB, "
            f"{g['multiprocessors']} SMs; usable kernel families: {usable}"
        )
    print("\n".join(lines), file=file)
    return r
