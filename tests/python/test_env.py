"""`python -m gptq env` and the import-time torch check tell the truth."""

import json
import subprocess
import sys

import pytest
import torch

import gptq
from gptq import _loader


def test_env_report_matches_this_machine():
    out = subprocess.run([sys.executable, "-m", "gptq", "env", "--json"], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    assert r["gptq"] == gptq.__version__
    assert r["torch"] == torch.__version__ == r["built_against_torch"]
    assert len(r["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if r["cuda_kernels_built"]:
        assert "dequant" in r["kernel_families"] and r["kernel_families"]["dequant"]
    else:
        assert r["kernel_families"] == {}
    for g in r["gpus"]:
        major, minor = torch.cuda.get_device_capability(g["index"])
        assert g["capability"] == f"{major}.{minor}"
    text = subprocess.run([sys.executable, "-m", "gptq", "env"], capture_output=True, text=True, check=True).stdout
    assert "CUDA kernels" in text and torch.__version__ in text


def test_torch_mismatch_is_a_clear_import_error():
    info = dict(gptq._BUILD_INFO, torch_version="2.7.0+cu126", torch_cuda_version="12.6")
    with pytest.raises(ImportError, match=r"(?s)built against torch 2\.7\.0\+cu126.*--no-build-isolation"):
        _loader.check_torch(info)
    info = dict(gptq._BUILD_INFO, cxx11_abi=1 - int(torch._C._GLIBCXX_USE_CXX11_ABI))
    with pytest.raises(ImportError, match="_GLIBCXX_USE_CXX11_ABI"):
        _loader.check_torch(info)


def test_libgptq_shares_torchs_cpp_runtime():
    """libgptq passes std::string, exceptions and streams to and from torch, so it must use the same
    dynamically linked libstdc++; a statically linked copy (some GCC builds do that by default) crashes
    the first time an op formats an error message."""
    import shutil
    from pathlib import Path

    if shutil.which("ldd") is None:
        pytest.skip("no ldd")
    lib = Path(gptq.__file__).parent / "lib" / "libgptq.so"
    deps = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "libstdc++.so" in deps, f"{lib} does not link libstdc++ dynamically:\n{deps}"
