"""Quantization settings: ``BaseQuantizeConfig``, AutoGPTQ's dataclass with our additions.

Fields and defaults are AutoGPTQ's (bits=4, group_size=-1, damp_percent=0.01, desc_act=True,
static_groups=False, sym=True, true_sequential=True, checkpoint_format="gptq", quant_method="gptq")
plus ``damp_auto_increment`` (0.0025; 0 disables the retry when Cholesky fails), ``mse`` (0 = off,
else the norm exponent of the clipping search, e.g. 2.4) and ``block_size`` (128). The C++ struct
``gptq::QuantizeConfig`` (include/gptq/config.h) has the same fields; validation is done there, so
both languages reject a bad value with the same message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CONFIG_FILES = ("quantize_config.json", "quant_config.json", "config.json")
"""Where from_pretrained looks, in order (config.json: its "quantization_config" entry)."""

_LEGACY_KEYS = {"w_bit": "bits", "q_group_size": "group_size"}


@dataclass
class BaseQuantizeConfig:
    bits: int = 4
    group_size: int = -1
    damp_percent: float = 0.01
    desc_act: bool = True
    static_groups: bool = False
    sym: bool = True
    true_sequential: bool = True
    model_name_or_path: str | None = None
    model_file_base_name: str | None = None
    checkpoint_format: str = "gptq"
    quant_method: str = "gptq"
    damp_auto_increment: float = 0.0025
    mse: float = 0.0
    block_size: int = 128

    def __post_init__(self) -> None:
        for name in ("bits", "group_size", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"BaseQuantizeConfig: {name} must be an integer, got {value!r}")
        for name in ("damp_percent", "damp_auto_increment", "mse"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"BaseQuantizeConfig: {name} must be a number, got {value!r}")
            setattr(self, name, float(value))
        for name in ("desc_act", "static_groups", "sym", "true_sequential"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"BaseQuantizeConfig: {name} must be true or false, got {value!r}")
        for name in ("checkpoint_format", "quant_method"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"BaseQuantizeConfig: {name} must be a string, got {getattr(self, name)!r}")
        error = self.to_native().error()
        if error:
            raise ValueError(f"BaseQuantizeConfig: {error}")

    # ---- the C++ mirror -------------------------------------------------------------------------
    def to_native(self):
        """The same settings as a ``gptq._C.QuantizeConfig`` (C++ gptq::QuantizeConfig)."""
        from . import _C  # noqa: PLC0415

        native = _C.QuantizeConfig()
        for f in fields(self):
            value = getattr(self, f.name)
            setattr(native, f.name, "" if value is None else value)
        return native

    # ---- dictionaries and files ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaseQuantizeConfig:
        """Builds a config from a quantize_config.json-style dict of any GPTQ tool.

        Keys are lower-cased; ``w_bit``/``q_group_size`` map to bits/group_size; ``format`` and
        ``method`` (GPTQModel, transformers 5) stand for checkpoint_format and quant_method;
        ``is_marlin_format: true`` or ``quant_method: "marlin"`` mean checkpoint_format "marlin";
        settings GPTQModel keeps under ``meta`` (damp_percent, damp_auto_increment, static_groups,
        true_sequential, mse) are read from there when absent at top level. Other keys are ignored
        (one log line names them).
        """
        src = {str(k).lower(): v for k, v in d.items()}
        for old, new in _LEGACY_KEYS.items():
            if old in src:
                src.setdefault(new, src.pop(old))
        if "format" in src:
            src.setdefault("checkpoint_format", src["format"])
            src.pop("format")
        if "method" in src:
            src.setdefault("quant_method", src["method"])
            src.pop("method")
        if src.pop("is_marlin_format", False):
            src["checkpoint_format"] = "marlin"
        if src.get("quant_method") == "marlin":
            src["quant_method"] = "gptq"
            src["checkpoint_format"] = "marlin"
        meta = src.pop("meta", None)
        if isinstance(meta, dict):
            for key in ("damp_percent", "damp_auto_increment", "static_groups", "true_sequential", "mse"):
                if key in meta and key not in src:
                    src[key] = meta[key]
        if isinstance(src.get("checkpoint_format"), str):
            src["checkpoint_format"] = src["checkpoint_format"].lower()
        if isinstance(src.get("quant_method"), str):
            src["quant_method"] = src["quant_method"].lower()
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in src if k not in known)
        if unknown:
            logger.info("BaseQuantizeConfig.from_dict: ignoring keys %s", ", ".join(unknown))
        return cls(**{k: v for k, v in src.items() if k in known})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> BaseQuantizeConfig:
        """Reads the first of quantize_config.json, quant_config.json, config.json["quantization_config"]."""
        folder = Path(folder)
        for name in CONFIG_FILES:
            path = folder / name
            if not path.is_file():
                continue
            data = json.loads(path.read_text())
            if name == "config.json":
                data = data.get("quantization_config")
                if not isinstance(data, dict):
                    continue
            return cls.from_dict(data)
        raise FileNotFoundError(
            f"BaseQuantizeConfig.from_pretrained: no quantization config in {str(folder)!r}: looked for "
            f"{', '.join(CONFIG_FILES[:2])} and a 'quantization_config' entry in config.json"
        )

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Writes quantize_config.json into ``folder`` atomically (temp file in the folder, then rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "quantize_config.json"
        fd, tmp = tempfile.mkstemp(prefix=".quantize_config.", suffix=".json.tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def as_config(config: BaseQuantizeConfig | dict[str, Any] | None) -> BaseQuantizeConfig:
    """Accepts a BaseQuantizeConfig, a dict of its keyword arguments, or None (defaults)."""
    if config is None:
        return BaseQuantizeConfig()
    if isinstance(config, BaseQuantizeConfig):
        return config
    if isinstance(config, dict):
        return BaseQuantizeConfig(**config)
    raise TypeError(f"config must be a BaseQuantizeConfig or a dict of its fields, got {type(config).__name__}")
