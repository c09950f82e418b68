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
