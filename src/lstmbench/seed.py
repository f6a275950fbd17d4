"""The seed study: its seven configurations and its published figures.

The figures are the project's own copy of ``shared/reference/seed_results.json`` (a course
project, one run per model, 10 epochs, batch 128, Adam at its default learning rate).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from lstmbench.config import DataConfig, EmbeddingConfig, ModelConfig, TrainConfig
from lstmbench.models import SEED_VARIANTS

__all__ = ["SEED_VARIANTS", "published", "seed_configs"]


def seed_configs(
    data: DataConfig,
    *,
    epochs: int = 10,
    seed: int = 0,
    device: str = "auto",
    keep_seed_bugs: bool = True,
    precision: str = "fp32",
) -> list[TrainConfig]:
    """The seed's seven runs: ``seed_view`` layout, hidden 512, one layer, Adam 1e-3, batch 128,
    no normalisation, the seed's augmentation and its constant embedding values; float32, as the
    seed ran (``precision="auto"`` trades exactness for the trainer's faster bf16 path).

    ``keep_seed_bugs`` keeps the CNN's dropout on at test time, as the seed had it.
    """
    return [
        TrainConfig(
            model=ModelConfig(
                variant=variant,
                layout="seed_view",
                hidden_size=512,
                layers=1,
                readout="last",
                embedding=EmbeddingConfig(),
                seed_eval_dropout=keep_seed_bugs,
            ),
            data=data,
            epochs=epochs,
            batch_size=128,
            lr=1e-3,
            augment=True,
            normalize=False,
            seed=seed,
            device=device,
            precision=precision,
        )
        for variant in SEED_VARIANTS
    ]


@cache
def _reference() -> dict[str, Any]:
    text = resources.files("lstmbench").joinpath("reference/seed_results.json").read_text()
    return json.loads(text)


def published(dataset: str) -> dict[str, dict[str, float]]:
    """The seed's figures for ``dataset`` as ``{variant: {metric: value}}``; empty when the seed
    did not use that dataset. Real CIFAR-10 in an image folder counts as ``cifar10``."""
    ref = _reference()
    key = "cifar10" if dataset.startswith("imagefolder") and "cifar" in dataset.lower() else dataset
    rows: dict[str, dict[str, float]] = {}
    for metric in ("test_accuracy", "test_macro_f1", "train_accuracy"):
        for variant, value in ref.get(metric, {}).get(key, {}).items():
            rows.setdefault(variant, {})[metric] = value
    return rows
