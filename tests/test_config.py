"""Configuration validation and its plain-data round trip."""

from __future__ import annotations

import json

import pytest

from lstmbench.config import (
    ConfigError,
    DataConfig,
    EmbeddingConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
    to_dict,
)


def test_round_trip_through_json() -> None:
    config = TrainConfig(
        model=ModelConfig(
            variant="lstm_learned_pos_chl",
            layout="columns",
            hidden_size=64,
            layers=2,
            bidirectional=True,
            dropout=0.1,
            readout="mean",
            embedding=EmbeddingConfig(
                pos_lo=-1.0, pos_hi=3.0, channel_values=(1.0, 2.0, 4.0), learned_init="zero"
            ),
        ),
        data=DataConfig(dataset="synthetic", limit_train=100, val_fraction=0.2),
        epochs=3,
        lr=5e-4,
        seed=7,
        device="cpu",
    )
    restored = from_dict(TrainConfig, json.loads(json.dumps(to_dict(config))))
    assert restored == config
    assert isinstance(restored.model.embedding, EmbeddingConfig)
    assert restored.model.embedding.channel_values == (1.0, 2.0, 4.0)


def test_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown ModelConfig key.*colour"):
        from_dict(ModelConfig, {"variant": "lstm", "colour": "red"})


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: EmbeddingConfig(pos_lo=3.0, pos_hi=1.0), "inverted"),
        (lambda: EmbeddingConfig(channel_values=(1.0, 2.0)), "three numbers"),
        (lambda: EmbeddingConfig(pos_lo=float("nan")), "finite"),
        (lambda: EmbeddingConfig(sin_base=1.0), "base"),
        (lambda: EmbeddingConfig(learned_init="random"), "learned-embedding init"),
        (lambda: ModelConfig(hidden_size=0), "hidden size"),
        (lambda: ModelConfig(layers=0), "layers"),
        (lambda: ModelConfig(dropout=1.0), "dropout"),
        (lambda: ModelConfig(layout="diagonal"), "unknown layout"),
        (lambda: ModelConfig(readout="max"), "unknown readout"),
        (lambda: DataConfig(dataset="mnist"), "unknown dataset"),
        (lambda: DataConfig(val_fraction=1.0), "validation fraction"),
        (lambda: DataConfig(limit_train=0), "--limit-train"),
        (lambda: DataConfig(image_size=4), "image size"),
        (lambda: TrainConfig(epochs=0), "epochs"),
        (lambda: TrainConfig(lr=float("inf")), "learning rate"),
        (lambda: TrainConfig(lr=-1.0), "learning rate"),
        (lambda: TrainConfig(device="cuda:x"), "unknown device"),
        (lambda: TrainConfig(precision="fp16"), "unknown precision"),
    ],
)
def test_invalid_values_raise_one_line(build, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        build()
    assert "\n" not in str(info.value)


def test_replace_revalidates() -> None:
    config = TrainConfig(device="cpu")
    assert config.replace(seed=3).seed == 3
    with pytest.raises(ConfigError):
        config.replace(batch_size=0)


def test_seed_runs_in_float32() -> None:
    from lstmbench.seed import seed_configs

    assert {c.precision for c in seed_configs(DataConfig())} == {"fp32"}


def test_seed_defaults() -> None:
    emb = EmbeddingConfig()
    assert (emb.pos_lo, emb.pos_hi) == (1.0, 2.0)
    assert emb.channel_values == (2.0, 2.5, 3.0)
