"""Training and evaluation: ``train()``, ``evaluate()``, metrics and the device policy.

``train`` knows nothing of Optuna or storage. Callers watch it through ``on_epoch(epoch, metrics)``,
called after every epoch; raising from that callback (for instance to prune) stops training.

The loop follows airbench: the uint8 images move to the device once, each batch is gathered by
index, converted to float and augmented there as a whole, so the time goes to the model's
forward, backward and optimiser step rather than to per-sample image work.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

from lstmbench.config import DEVICES_HELP, ConfigError, TrainConfig, is_device_name, to_dict
from lstmbench.data import ImageData, augment_batch
from lstmbench.models import build, count_parameters

__all__ = [
    "EpochMetrics",
    "Evaluation",
    "NonFiniteLossError",
    "TrainResult",
    "evaluate",
    "mixed_precision",
    "resolve_device",
    "resolve_precision",
    "train",
]

log = logging.getLogger(__name__)

EVAL_BATCH = 1024


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


@dataclass(frozen=True)
class EpochMetrics:
    """What ``on_epoch`` receives after each epoch."""

    epoch: int
    train_loss: float
    val_accuracy: float | None
    val_macro_f1: float | None
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    predictions: torch.Tensor  # int64 (N,), on the CPU


@dataclass
class TrainResult:
    """Everything a run produced. ``summary()`` is the JSON that the CLI and the search store."""

    config: TrainConfig
    dataset: str
    device: str
    precision: str  # resolved: bf16 or fp32
    params: int
    train_seconds: float
    samples_per_second: float
    epochs_completed: int
    loss_curve: list[float] = field(default_factory=list)
    val_curve: list[float] = field(default_factory=list)
    val: Evaluation | None = None
    test: Evaluation | None = None
    train_eval: Evaluation | None = None

    def summary(self) -> dict[str, Any]:
        def metric(ev: Evaluation | None, name: str) -> float | None:
            return None if ev is None else getattr(ev, name)

        return {
            "variant": self.config.model.variant,
            "dataset": self.dataset,
            "layout": self.config.model.layout,
            "test_accuracy": metric(self.test, "accuracy"),
            "test_macro_f1": metric(self.test, "macro_f1"),
            "val_accuracy": metric(self.val, "accuracy"),
            "val_macro_f1": metric(self.val, "macro_f1"),
            "train_accuracy": metric(self.train_eval, "accuracy"),
            "params": self.params,
            "train_seconds": round(self.train_seconds, 3),
            "samples_per_second": round(self.samples_per_second, 1),
            "epochs": self.epochs_completed,
            "device": self.device,
            "precision": self.precision,
            "loss_curve": [round(v, 5) for v in self.loss_curve],
            "config": to_dict(self.config),
        }


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU. A named CUDA device must exist on this machine."""
    if not is_device_name(name):
        raise ConfigError(f"unknown device {name!r}; use {DEVICES_HELP}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here; use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
            "device(s); use cuda:0 to cuda:N-1"
        )
    return device


def configure_cpu_threads() -> int:
    """Use ``LSTMBENCH_THREADS`` when set (the launcher splits cores between workers), else
    torch's default of one thread per physical core."""
    threads = os.environ.get("LSTMBENCH_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


class Normalize(nn.Module):
    """Per-channel standardisation with the training set's mean and std."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1), x.std(1).clamp_min(1e-6)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` where the device has bfloat16 units, else ``fp32``.

    bf16 autocast needs no loss scaling. On CUDA the convolutions and LSTM run on tensor cores;
    on a CPU with AVX512-BF16 or AMX (oneDNN kernels) it measured 1.5-1.6x (LSTMs) and 1.8-1.9x
    (CNN) the float32 step rate on 2 cores (benchmark/RESULTS.md). Without such units it would be
    emulated and slower, so ``auto`` stays in float32 there.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    ):
        return "bf16"
    return "fp32"


def mixed_precision(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context for a *resolved* precision (``bf16`` or ``fp32``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    precision: str = "fp32",
) -> Evaluation:
    """Accuracy and macro-F1 (scikit-learn, ``zero_division=0``, as the seed) of ``model``."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(labels), EVAL_BATCH):
        batch = images[start : start + EVAL_BATCH].to(device, non_blocking=True)
        with mixed_precision(device, precision):
            preds.append(model(batch.float().div_(255)).argmax(1))
    model.train(was_training)
    predictions = torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)
    targets = labels.cpu()
    accuracy = (predictions == targets).float().mean().item() if len(targets) else float("nan")
    macro_f1 = (
        float(f1_score(targets.numpy(), predictions.numpy(), average="macro", zero_division=0))
        if len(targets)
        else float("nan")
    )
    return Evaluation(accuracy, macro_f1, predictions)


def train(
    config: TrainConfig,
    data: ImageData,
    on_epoch: Callable[[int, EpochMetrics], None] | None = None,
    *,
    evaluate_test: bool = True,
    evaluate_train: bool = False,
) -> TrainResult:
    """Train ``config`` on ``data``; evaluate on validation every epoch and on test at the end.

    ``evaluate_test=False`` keeps the test split untouched (the search uses this).
    ``evaluate_train=True`` also scores the training images without augmentation, as the seed did.
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if device.type == "cpu":
        configure_cpu_threads()
    else:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)  # weights are initialised from this seed
    generator = torch.Generator(device=device).manual_seed(config.seed)  # order + augmentation

    model: nn.Module = build(config.model, data.num_classes, data.image_size)
    params = count_parameters(model)
    if config.normalize:
        model = nn.Sequential(Normalize(*_channel_stats(data.train_x)), model)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    train_x = data.train_x.to(device)  # resident for the whole run; uint8 keeps it small
    train_y = data.train_y.to(device)
    n, batch = len(train_y), config.batch_size
    steps = n // batch  # the incomplete last batch is dropped, as in the seed
    if steps == 0:
        raise ConfigError(
            f"the training split has {n} images, fewer than one batch of {batch}; "
            "lower --batch-size or raise --limit-train"
        )

    result = TrainResult(config, data.name, str(device), precision, params, 0.0, 0.0, 0)
    log.info(
        "training %s on %s (%s, %s): %d params, %d steps/epoch",
        config.model.variant,
        data.name,
        device,
        precision,
        params,
        steps,
    )
    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps):
            idx = order[step * batch : (step + 1) * batch]
            images = train_x.index_select(0, idx)  # ~20x faster than train_x[idx] for uint8
            if config.augment:  # on the uint8 batch: a gather moves a quarter of the bytes
                images = augment_batch(images, generator)
            images = images.float().div_(255)
            with mixed_precision(device, precision):
                loss = F.cross_entropy(model(images), train_y.index_select(0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()  # no per-step host sync; checked once per epoch
        mean_loss = loss_sum.item() / steps
        seconds = time.perf_counter() - started
        result.train_seconds += seconds
        result.epochs_completed = epoch
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(
                f"training loss became {mean_loss} in epoch {epoch} "
                f"(lr={config.lr}); lower the learning rate"
            )
        result.loss_curve.append(mean_loss)
        if len(data.val_y):
            result.val = evaluate(model, data.val_x, data.val_y, device, precision)
            result.val_curve.append(result.val.accuracy)
        metrics = EpochMetrics(
            epoch,
            mean_loss,
            result.val.accuracy if result.val else None,
            result.val.macro_f1 if result.val else None,
            seconds,
        )
        log.debug("epoch %s", asdict(metrics))
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    result.samples_per_second = steps * batch * result.epochs_completed / result.train_seconds
    if evaluate_test:
        result.test = evaluate(model, data.test_x, data.test_y, device, precision)
    if evaluate_train:
        result.train_eval = evaluate(model, data.train_x, data.train_y, device, precision)
    return result
