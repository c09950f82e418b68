"""The installed package works for C++ applications: examples/cpp builds with
find_package(gptq CONFIG REQUIRED) against it (gptq.cmake_prefix_path) and runs."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch.utils

import gptq

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cpp_example_builds_against_installed_package_and_runs(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    prefix = f"{gptq.cmake_prefix_path};{torch.utils.cmake_prefix_path}"
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0"))
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(tmp_path), *gen,
                    f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True, text=True, env=env)
    subprocess.run(["cmake", "--build", str(tmp_path)], check=True, capture_output=True, text=True, env=env)
    run = subprocess.run([str(tmp_path / "dequantize_layer")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"gptq {gptq.__version__}" in run.stdout and "relative error" in run.stdout
