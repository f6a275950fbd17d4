"""Frozen, validated configuration objects.

Every run is described by plain data: a :class:`DataConfig` (which images, which splits), a
:class:`ModelConfig` (which variant and its embedding values) and a :class:`TrainConfig` (how to
optimise). They are validated once, when constructed, so nothing downstream re-checks them, and
they round-trip through ``to_dict``/``from_dict`` so that a trial or a result can store the exact
configuration that produced it.

Names that the product speaks (variants, layouts, datasets) live in their own registries; this
module only checks them through small lookup functions so that it does not import torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "DATASETS",
    "LAYOUTS",
    "LEARNED_INITS",
    "READOUTS",
    "ConfigError",
    "DataConfig",
    "EmbeddingConfig",
    "ModelConfig",
    "TrainConfig",
    "from_dict",
    "to_dict",
]

LAYOUTS = ("rows", "columns", "pixels", "seed_view")
READOUTS = ("last", "mean")
LEARNED_INITS = ("fixed", "zero")
DATASETS = ("synthetic", "cifar10", "caltech101", "flowers102", "imagefolder")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "bf16", "fp32")


class ConfigError(ValueError):
    """A user-facing configuration mistake. Its message is one line that says how to fix it."""


def is_device_name(name: str) -> bool:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: the device names every command accepts."""
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _choice(value: str, choices: tuple[str, ...] | list[str], what: str) -> None:
    _check(value in choices, f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def _finite(value: float, what: str) -> None:
    _check(
        isinstance(value, (int, float)) and math.isfinite(value), f"{what} must be a finite number"
    )


@dataclass(frozen=True)
class EmbeddingConfig:
    """Values of the input embeddings. The defaults are the seed study's constants."""

    pos_lo: float = 1.0
    pos_hi: float = 2.0
    channel_values: tuple[float, float, float] = (2.0, 2.5, 3.0)
    sin_base: float = 10000.0
    sin_scale: float = 1.0
    learned_init: str = "fixed"

    def __post_init__(self) -> None:
        _finite(self.pos_lo, "positional lo")
        _finite(self.pos_hi, "positional hi")
        _check(
            self.pos_lo <= self.pos_hi,
            f"positional range is inverted: lo={self.pos_lo} > hi={self.pos_hi}; give lo <= hi",
        )
        values = (
            tuple(self.channel_values) if isinstance(self.channel_values, (list, tuple)) else ()
        )
        _check(
            len(values) == 3 and all(isinstance(v, (int, float)) for v in values),
            f"channel values must be three numbers (r, g, b), got {self.channel_values!r}",
        )
        for v in values:
            _finite(v, "each channel value")
        object.__setattr__(self, "channel_values", tuple(float(v) for v in values))
        _finite(self.sin_base, "sinusoidal base")
        _check(self.sin_base > 1.0, f"sinusoidal base must be > 1, got {self.sin_base}")
        _finite(self.sin_scale, "sinusoidal scale")
        _choice(self.learned_init, LEARNED_INITS, "learned-embedding init")


@dataclass(frozen=True)
class ModelConfig:
    """Which variant to build and how. LSTM-only fields are ignored by the CNN."""

    variant: str = "lstm"
    layout: str = "rows"
    hidden_size: int = 512
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    readout: str = "last"
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    # The seed's CNN called dropout functionally, so it stayed on at test time; True keeps that.
    seed_eval_dropout: bool = False

    def __post_init__(self) -> None:
        from lstmbench.models import variant_names  # local: keeps this module torch-free to import

        _choice(self.variant, variant_names(), "variant")
        _choice(self.layout, LAYOUTS, "layout")
        _choice(self.readout, READOUTS, "readout")
        _check(
            isinstance(self.hidden_size, int) and self.hidden_size > 0,
            f"hidden size must be a positive integer, got {self.hidden_size!r}",
        )
        _check(
            isinstance(self.layers, int) and self.layers > 0,
            f"layers must be a positive integer, got {self.layers!r}",
        )
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.embedding, dict):
            object.__setattr__(self, "embedding", from_dict(EmbeddingConfig, self.embedding))


@dataclass(frozen=True)
class DataConfig:
    """Which images, at what size, and how they are split."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    image_size: int = 32
    val_fraction: float = 0.1
    limit_train: int | None = None
    limit_test: int | None = None
    split_seed: int = 0
    cache_dir: str | None = None
    download: bool = False
    # Size of the generated synthetic dataset (ignored by the others).
    synthetic_train: int = 10000
    synthetic_test: int = 2000

    def __post_init__(self) -> None:
        _choice(self.dataset, DATASETS, "dataset")
        _check(
            self.dataset != "imagefolder" or bool(self.data_dir),
            "dataset 'imagefolder' needs --data-dir DIR (DIR/train/<class>/*, DIR/test/<class>/*, "
            "or DIR/<class>/*)",
        )
        _check(self.image_size >= 8, f"image size must be at least 8, got {self.image_size}")
        _check(
            0.0 <= self.val_fraction < 1.0,
            f"validation fraction must be in [0, 1), got {self.val_fraction}",
        )
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            _check(
                value is None or (isinstance(value, int) and value > 0),
                f"--{name.replace('_', '-')} must be a positive integer, got {value!r}",
            )
        _check(
            self.synthetic_train > 0 and self.synthetic_test > 0,
            "synthetic dataset sizes must be positive",
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything needed to train one model once. Saved with every trial and result."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    augment: bool = True
    normalize: bool = False
    seed: int = 0
    device: str = "auto"
    # "auto": bfloat16 autocast where the hardware has bf16 units (CUDA; CPUs with AVX512-BF16 or
    # AMX), else float32. "fp32" is what the seed ran; `reproduce` uses it.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", from_dict(ModelConfig, self.model))
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", from_dict(DataConfig, self.data))
        _check(
            isinstance(self.epochs, int) and self.epochs > 0,
            f"epochs must be a positive integer, got {self.epochs!r}",
        )
        _check(
            isinstance(self.batch_size, int) and self.batch_size > 0,
            f"batch size must be a positive integer, got {self.batch_size!r}",
        )
        _finite(self.lr, "learning rate")
        _check(self.lr > 0, f"learning rate must be positive, got {self.lr}")
        _check(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        _check(is_device_name(self.device), f"unknown device {self.device!r}; use {DEVICES_HELP}")
        _check(
            self.precision in PRECISIONS,
            f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}",
        )

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from plain data, naming any unknown key."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    _check(not unknown, f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    kwargs = dict(data)
    if "channel_values" in kwargs and isinstance(kwargs["channel_values"], list):
        kwargs["channel_values"] = tuple(kwargs["channel_values"])
    return cls(**kwargs)
