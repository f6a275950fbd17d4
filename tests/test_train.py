"""train(), evaluate(), the epoch callback, failure modes and the result summary."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

import lstmbench.train as train_mod
from lstmbench.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from lstmbench.data import ImageData, load
from lstmbench.train import (
    EpochMetrics,
    NonFiniteLossError,
    TrainResult,
    evaluate,
    resolve_device,
    resolve_precision,
    train,
)

SUMMARY_KEYS = {
    "variant",
    "dataset",
    "test_accuracy",
    "test_macro_f1",
    "val_accuracy",
    "params",
    "train_seconds",
    "samples_per_second",
}


def _config(data_cfg: DataConfig, variant: str = "lstm", **changes) -> TrainConfig:
    model = ModelConfig(variant=variant, hidden_size=changes.pop("hidden_size", 16))
    defaults = dict(epochs=2, batch_size=64, lr=3e-3, seed=0, device="cpu")
    defaults.update(changes)
    return TrainConfig(model=model, data=data_cfg, **defaults)


@pytest.fixture(scope="module")
def learnable() -> tuple[DataConfig, ImageData]:
    """Enough synthetic images to learn from in a few seconds: 2700 fit, 300 val, 500 test."""
    cfg = DataConfig(synthetic_train=3000, synthetic_test=500)
    return cfg, load(cfg)


# --- learning -------------------------------------------------------------------------------------

# Measured on 2 CPU cores with these settings: cnn 0.80-0.84 val accuracy over seeds 0-3 (about
# 3 s); lstm 0.61-0.65 over seeds 0-3 (about 2-4 s). Chance is 0.1; the thresholds leave 0.2.


def test_cnn_learns(learnable, seed: int = 0) -> None:
    cfg, data = learnable
    config = TrainConfig(
        model=ModelConfig(variant="cnn"),
        data=cfg,
        epochs=1,
        batch_size=64,
        lr=1e-3,
        augment=False,
        seed=seed,
        device="cpu",
    )
    result = train(config, data)
    assert result.val.accuracy > 0.6
    assert result.test.accuracy > 0.6
    assert result.test.macro_f1 > 0.5


def test_lstm_learns(learnable, seed: int = 0) -> None:
    cfg, data = learnable
    config = TrainConfig(
        model=ModelConfig(variant="lstm", hidden_size=128, readout="mean"),
        data=cfg,
        epochs=3,
        batch_size=64,
        lr=3e-3,
        augment=False,
        seed=seed,
        device="cpu",
    )
    result = train(config, data)
    assert result.val.accuracy > 0.4
    assert result.test.accuracy > 0.4
    assert result.loss_curve[-1] < result.loss_curve[0] < math.log(10) + 0.2


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["lstm_pos_chl", "cnn"])
def test_same_seed_same_run(small_data_config, small_data, variant: str) -> None:
    config = _config(small_data_config, variant, augment=True, epochs=2 if variant != "cnn" else 1)
    a, b = train(config, small_data), train(config, small_data)
    assert a.loss_curve == b.loss_curve
    assert a.val_curve == b.val_curve
    assert torch.equal(a.val.predictions, b.val.predictions)
    assert torch.equal(a.test.predictions, b.test.predictions)
    c = train(config.replace(seed=1), small_data)
    assert c.loss_curve != a.loss_curve


# --- callback -------------------------------------------------------------------------------------


def test_on_epoch_called_each_epoch(small_data_config, small_data) -> None:
    calls: list[tuple[int, EpochMetrics]] = []
    result = train(
        _config(small_data_config, epochs=3),
        small_data,
        on_epoch=lambda e, m: calls.append((e, m)),
    )
    assert [e for e, _ in calls] == [1, 2, 3]
    for epoch, metrics in calls:
        assert isinstance(metrics, EpochMetrics)
        assert metrics.epoch == epoch
        assert isinstance(metrics.train_loss, float) and math.isfinite(metrics.train_loss)
        assert 0.0 <= metrics.val_accuracy <= 1.0
        assert 0.0 <= metrics.val_macro_f1 <= 1.0
        assert metrics.seconds > 0
    assert [m.train_loss for _, m in calls] == result.loss_curve
    assert [m.val_accuracy for _, m in calls] == result.val_curve
    assert result.epochs_completed == 3


class StopTrainingError(Exception):
    pass


def test_exception_from_on_epoch_stops_training(small_data_config, small_data) -> None:
    seen: list[int] = []

    def on_epoch(epoch: int, metrics: EpochMetrics) -> None:
        seen.append(epoch)
        if epoch == 2:
            raise StopTrainingError("pruned")

    with pytest.raises(StopTrainingError, match="pruned"):
        train(_config(small_data_config, epochs=5), small_data, on_epoch=on_epoch)
    assert seen == [1, 2]


# --- failures -------------------------------------------------------------------------------------


def test_huge_learning_rate_raises_non_finite(small_data_config, small_data) -> None:
    # lr=1e6 keeps the loss finite (about 1e22) on this CNN; 1e30 overflows it to NaN.
    calls: list[int] = []
    config = _config(small_data_config, "cnn", lr=1e30, epochs=3, batch_size=32)
    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        train(config, small_data, on_epoch=lambda e, m: calls.append(e))
    assert calls == []


def test_nan_loss_raises_non_finite(small_data_config, small_data, monkeypatch) -> None:
    real = F.cross_entropy

    class PatchedF:
        def __getattr__(self, name):
            return getattr(F, name)

        @staticmethod
        def cross_entropy(logits, labels):
            return real(logits, labels) * float("nan")

    monkeypatch.setattr(train_mod, "F", PatchedF())
    calls: list[int] = []
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        train(
            _config(small_data_config, epochs=2), small_data, on_epoch=lambda e, m: calls.append(e)
        )
    assert calls == []


def test_split_smaller_than_a_batch(small_data_config, small_data) -> None:
    with pytest.raises(ConfigError, match="fewer than one batch"):
        train(_config(small_data_config, batch_size=len(small_data.train_y) + 1), small_data)


def test_cuda_requested_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here, so asking for it is not an error")
    with pytest.raises(ConfigError, match="CUDA is not available here; use cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_device_names_and_indices_are_checked(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="has 1 CUDA device"):
        resolve_device("cuda:1")


# --- results --------------------------------------------------------------------------------------


def test_evaluate_test_false_leaves_test_untouched(small_data_config, small_data) -> None:
    result = train(_config(small_data_config, epochs=1), small_data, evaluate_test=False)
    assert result.test is None
    assert result.val is not None and result.train_eval is None
    summary = result.summary()
    assert summary["test_accuracy"] is None and summary["test_macro_f1"] is None
    assert summary["val_accuracy"] == result.val.accuracy


def test_summary(small_data_config, small_data) -> None:
    config = _config(small_data_config, "lstm_sin", epochs=2)
    result = train(config, small_data, evaluate_train=True)
    assert isinstance(result, TrainResult)
    summary = result.summary()
    assert set(summary) >= SUMMARY_KEYS
    assert summary["variant"] == "lstm_sin"
    assert summary["dataset"] == "synthetic"
    for key in ("test_accuracy", "test_macro_f1", "val_accuracy", "train_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["params"] == sum(p.numel() for p in _model_params(config, small_data))
    assert summary["train_seconds"] > 0 and summary["samples_per_second"] > 0
    assert summary["epochs"] == 2 and len(summary["loss_curve"]) == 2
    assert summary["device"] == "cpu"
    # the exact configuration round-trips through JSON
    restored = json.loads(json.dumps(summary))
    assert TrainConfig(**restored["config"]) == config
    # samples/s counts whole batches only (the last partial batch is dropped)
    steps = len(small_data.train_y) // config.batch_size
    assert result.samples_per_second == pytest.approx(
        steps * config.batch_size * 2 / result.train_seconds
    )


def _model_params(config: TrainConfig, data: ImageData):
    from lstmbench.models import build

    return build(config.model, data.num_classes, data.image_size).parameters()


def test_normalize_does_not_change_param_count(small_data_config, small_data) -> None:
    plain = train(_config(small_data_config, epochs=1), small_data)
    normed = train(_config(small_data_config, epochs=1, normalize=True), small_data)
    assert normed.params == plain.params
    assert math.isfinite(normed.loss_curve[0])
    assert normed.loss_curve != plain.loss_curve


class ConstantModel(nn.Module):
    """Always predicts ``cls``."""

    def __init__(self, cls: int, num_classes: int = 10) -> None:
        super().__init__()
        self.cls, self.num_classes = cls, num_classes
        self.mode_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mode_seen.append(self.training)
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, self.cls] = 1.0
        return logits


def test_evaluate_metrics() -> None:
    labels = torch.tensor([3, 3, 1, 3, 0, 2, 3, 1])
    images = torch.zeros(len(labels), 3, 8, 8, dtype=torch.uint8)
    model = ConstantModel(3).train()
    ev = evaluate(model, images, labels, torch.device("cpu"))
    assert ev.accuracy == pytest.approx(4 / 8)
    preds = torch.full_like(labels, 3)
    assert torch.equal(ev.predictions, preds)
    expected_f1 = f1_score(labels.numpy(), preds.numpy(), average="macro", zero_division=0)
    assert ev.macro_f1 == pytest.approx(expected_f1)
    assert model.mode_seen == [False]  # evaluated in eval mode...
    assert model.training  # ... and put back into training mode


def test_evaluate_batches_large_inputs(monkeypatch) -> None:
    monkeypatch.setattr(train_mod, "EVAL_BATCH", 3)
    labels = torch.arange(10) % 2
    model = ConstantModel(1, num_classes=2)
    ev = evaluate(model, torch.zeros(10, 3, 4, 4, dtype=torch.uint8), labels, torch.device("cpu"))
    assert len(model.mode_seen) == 4  # ceil(10 / 3)
    assert len(ev.predictions) == 10 and ev.accuracy == pytest.approx(0.5)


# --- precision ------------------------------------------------------------------------------------


def test_auto_precision_follows_the_hardware(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("fp32", cuda) == "fp32"
    for bf16_units in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda b=bf16_units: b)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert resolve_precision("auto", cpu) == ("bf16" if bf16_units else "fp32")
        assert resolve_precision("bf16", cpu) == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_train_and_are_recorded(small_data_config, small_data, precision) -> None:
    result = train(_config(small_data_config, precision=precision, epochs=1), small_data)
    summary = result.summary()
    assert summary["precision"] == precision
    assert summary["config"]["precision"] == precision
    assert math.isfinite(result.loss_curve[0])
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_bf16_runs_in_bf16_and_fp32_does_not(small_data_config, small_data, monkeypatch) -> None:
    """The policy reaches the model: under bf16 the LSTM's output is bfloat16."""
    seen: list[torch.dtype] = []
    original = nn.LSTM.forward

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append(out[0].dtype)
        return out

    monkeypatch.setattr(nn.LSTM, "forward", spy)
    train(_config(small_data_config, precision="bf16", epochs=1), small_data)
    assert seen and seen[0] == torch.bfloat16
    seen.clear()
    train(_config(small_data_config, precision="fp32", epochs=1), small_data)
    assert seen and set(seen) == {torch.float32}
