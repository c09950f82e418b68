"""Shared pytest configuration: tests marked `gpu` skip themselves on a machine without CUDA."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (the measure every kernel test uses)."""
    o, r = out.double().cpu(), ref.double().cpu()
    return float((o - r).norm() / r.norm().clamp_min(1e-300))
