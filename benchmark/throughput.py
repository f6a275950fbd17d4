"""Training throughput: the project's trainer against the seed's pipeline and the bare model.

For each model (``cnn``, and ``lstm`` with hidden size 128 and 512, ``rows`` layout as the trainer
defaults to; the seed's ``seed_view`` layout is a reshape instead of a permutation and costs the
same) this measures training samples per second, batch 128, Adam + cross-entropy, in three ways:

* **seed**: the seed study's pipeline. A ``torch.utils.data.Dataset`` hands out one PIL image at a
  time through ``torchvision.transforms`` (``Resize(32)``, ``RandomCrop(32, padding=5)``,
  ``RandomHorizontalFlip()``, ``RandomRotation(20)``, ``ToTensor()``) to a ``DataLoader``
  (shuffle, ``drop_last``). ``num_workers=0`` is what the seed notebook had and is the figure the
  ratios use; ``num_workers=2`` (persistent workers) is an extra column (``--no-workers`` skips it).
* **trainer**: ``lstmbench.train.train`` on an ``ImageData`` of the same images (augmentation on,
  no validation or test split, so no evaluation runs), one epoch of exactly ``--steps`` batches;
  the figure is its ``TrainResult.samples_per_second``.
* **ceiling**: forward, backward and optimiser step only, on float batches made in advance (no
  augmentation, no indexing), in the trainer's precision: the most any pipeline could reach with
  this model here. Where that precision is bf16 (``auto`` on a GPU or an AVX512-BF16/AMX CPU), a
  float32 ceiling is measured too, which splits the trainer's gain over the seed into what the
  batched pipeline wins and what bfloat16 wins. The seed pipeline runs in float32, as the seed did.

All three see the same images: a class-balanced subset (``--images``, default 4096) of the real
CIFAR-10 training set in ``../shared/datasets/cifar10/train/<class>/*.jpg`` (relative to the repo
root), decoded once with PIL into uint8 tensors, or, when that folder is absent, the same number of
synthetic 32x32 images from ``lstmbench.data.make_synthetic``. The output says which.

Every measurement warms up first (``--warmup`` steps on the same model, or for the trainer one
separate ``train`` call of that many steps) and then times ``--steps`` steps. For each model the
pipelines run in turn, in an order rotated on every repeat, ``--repeats`` times; the table shows
the median and ± half the range (max - min) as a percentage of it. Ratios are ratios of medians.

The machine may be shared. Each measurement records how much of the CPU other processes used while
it ran (``/proc/stat`` less this process and its DataLoader workers); ``--wait-idle S`` waits up to
S seconds for a quiet machine before each measurement, and one taken while others used more than
``--busy-threshold`` of the CPU is retried up to ``--retries`` times, keeping the quietest attempt.
The last column, ``busy``, is the largest share kept for that model; a high one means noise.

Run it from the repository root with the project's virtual environment::

    . .venv/bin/activate
    python benchmark/throughput.py              # full run, a table (several minutes on 2 cores)
    python benchmark/throughput.py --quick      # fewer steps, one repeat less: a smoke test
    python benchmark/throughput.py --json       # a JSON list on stdout, the table on stderr
    python benchmark/throughput.py --repeats 5  # more repeats against noise
    python benchmark/throughput.py --device cuda --synthetic   # on a GPU (benchmark/gpu.sh)

With ``--json`` stdout holds only a JSON list, one object per model, with ``model``,
``trainer_samples_per_s``, ``seed_pipeline_samples_per_s``, ``ceiling_samples_per_s``,
``trainer_vs_seed`` and ``trainer_vs_ceiling``, plus the ``num_workers=2`` figure, every repeat's
figures, the spreads, the busy share and the targets; the header, progress and table go to stderr.
Without it the header and the table go to stdout and progress to stderr.

Targets on a 2-core CPU: ``trainer_vs_ceiling >= 0.9`` for every model, ``trainer_vs_seed >= 1.2``
for ``lstm-512`` and ``>= 1.4`` for ``cnn``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from _common import header_lines, machine_ticks
from lstmbench.config import PRECISIONS, ModelConfig, TrainConfig
from lstmbench.data import ImageData, make_synthetic
from lstmbench.models import build
from lstmbench.train import mixed_precision, resolve_precision, train

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR_DIR = REPO_ROOT.parent / "shared" / "datasets" / "cifar10"
BATCH = 128
IMAGE_SIZE = 32
LR = 1e-3

MODELS: dict[str, ModelConfig] = {
    "cnn": ModelConfig(variant="cnn"),
    "lstm-128": ModelConfig(variant="lstm", layout="rows", hidden_size=128),
    "lstm-512": ModelConfig(variant="lstm", layout="rows", hidden_size=512),
}
# Minimum trainer/seed and trainer/ceiling ratios on a 2-core CPU.
TARGET_VS_SEED = {"cnn": 1.4, "lstm-512": 1.2}
TARGET_VS_CEILING = 0.9

PIPELINES = ("seed", "seed_w2", "trainer", "ceiling", "ceiling_fp32")


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Images:
    """The benchmark's images: uint8 ``(N, 3, S, S)``, labels, and where they came from."""

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    source: str


def load_cifar_subset(root: Path, count: int) -> Images:
    """``count`` training images, class-balanced (the first files of each class, interleaved)."""
    train_dir = root / "train"
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    per_class = -(-count // len(classes))
    files = {c: sorted((train_dir / c).glob("*.jpg"))[:per_class] for c in classes}
    chosen = [
        (files[c][i], label)
        for i in range(per_class)
        for label, c in enumerate(classes)
        if i < len(files[c])
    ][:count]
    arrays = []
    for path, _ in chosen:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
                rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(rgb, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in chosen], dtype=torch.long)
    return Images(x, y, tuple(classes), f"CIFAR-10 (real, {root}/train, {len(y)} images)")


def load_images(count: int, synthetic: bool) -> Images:
    """Real CIFAR-10 when it is there (unless ``synthetic``), else synthetic images of its shape."""
    if not synthetic and (CIFAR_DIR / "train").is_dir():
        return load_cifar_subset(CIFAR_DIR, count)
    x, y = make_synthetic(count, IMAGE_SIZE, seed=0)
    classes = tuple(str(i) for i in range(10))
    why = "--synthetic" if synthetic else f"{CIFAR_DIR} absent"
    return Images(x, y, classes, f"synthetic (make_synthetic, {count} images; {why})")


def image_data(images: Images, count: int) -> ImageData:
    """The first ``count`` images as training data; empty validation and test splits."""
    empty_x = images.x[:0]
    empty_y = images.y[:0]
    return ImageData(
        name="benchmark",
        classes=images.classes,
        train_x=images.x[:count],
        train_y=images.y[:count],
        val_x=empty_x,
        val_y=empty_y,
        test_x=empty_x,
        test_y=empty_y,
    )


class SeedDataset(Dataset):
    """The seed's kind of dataset: one PIL image per item, through ``transform``."""

    def __init__(self, images: Images, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.hwc = images.x.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = images.y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.hwc[index])), self.labels[index]


def seed_transform() -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE),
            transforms.RandomCrop(IMAGE_SIZE, padding=5),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(20),
            transforms.ToTensor(),
        ]
    )


def seed_loader(images: Images, workers: int) -> DataLoader:
    return DataLoader(
        SeedDataset(images, seed_transform()),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


# --- CPU accounting -------------------------------------------------------------------------------


def _own_tree_ticks() -> int:
    """CPU ticks used so far by this process and its live children (the DataLoader workers)."""
    me = os.getpid()
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[1] is ppid; fields[11], fields[12] are utime, stime (stat fields 4, 14, 15).
        if int(entry.name) == me or int(fields[1]) == me:
            total += int(fields[11]) + int(fields[12])
    return total


class CpuMeter:
    """Share of the machine's CPU used by *other* processes between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.available = Path("/proc/stat").exists()
        self._start = (0, 0, 0)

    def _read(self) -> tuple[int, int, int]:
        return (*machine_ticks(), _own_tree_ticks()) if self.available else (0, 0, 0)

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        busy, total, own = self._read()
        d_busy, d_total = busy - self._start[0], total - self._start[1]
        d_own = own - self._start[2]
        return max(0.0, (d_busy - d_own) / d_total) if d_total > 0 else 0.0


def wait_for_quiet(meter: CpuMeter, limit_s: float, threshold: float) -> None:
    """Wait (at most ``limit_s``) until other processes use less than ``threshold`` of the CPU."""
    deadline = time.monotonic() + limit_s
    while meter.available and time.monotonic() < deadline:
        meter.start()
        time.sleep(0.5)
        if meter.stop() < threshold:
            return


def measure_quietly(
    run: Callable[[], float],
    meter: CpuMeter,
    *,
    wait_idle: float,
    threshold: float,
    retries: int,
    label: str,
) -> tuple[float, float, int]:
    """``run()`` on a machine as quiet as can be had: ``(value, others' CPU share, retries)``.

    Waits (at most ``wait_idle`` seconds) for other processes to go quiet, measures, and measures
    again, up to ``retries`` times, while others used more than ``threshold`` of the CPU; keeps
    the attempt during which others used the least.
    """
    best: tuple[float, float] | None = None
    attempts = 0
    for attempts in range(retries + 1):
        if wait_idle > 0:
            wait_for_quiet(meter, wait_idle, threshold / 2)
        meter.start()
        value = run()
        busy = meter.stop()
        if best is None or busy < best[1]:
            best = (value, busy)
        if busy <= threshold:
            break
        if attempts < retries:
            note(f"  {label}: others used {busy:.0%} of the CPU; measuring again")
    assert best is not None
    return best[0], best[1], attempts


# --- the three pipelines --------------------------------------------------------------------------


def fresh_model(
    config: ModelConfig, num_classes: int, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = build(config, num_classes, IMAGE_SIZE).to(device)
    model.train()
    return model, torch.optim.Adam(model.parameters(), lr=LR)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read afterwards covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str,
) -> torch.Tensor:
    with mixed_precision(x.device, precision):
        loss = cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def run_seed(
    config: ModelConfig,
    images: Images,
    loader: DataLoader,
    warmup: int,
    steps: int,
    device: torch.device,
) -> float:
    """The seed's loop: batches from the per-sample PIL ``DataLoader``, float32 as the seed ran;
    samples/s over ``steps``."""
    model, optimizer = fresh_model(config, len(images.classes), device)
    running = 0.0
    for _, (x, y) in zip(range(warmup), loader, strict=False):
        running += train_step(model, optimizer, x.to(device), y.to(device), "fp32").item()
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)  # a fresh epoch
    started = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        # .item() is the seed's running loss, a host sync every step
        running += train_step(model, optimizer, x.to(device), y.to(device), "fp32").item()
    seconds = time.perf_counter() - started
    del batches
    return steps * BATCH / seconds


def run_trainer(
    config: ModelConfig,
    images: Images,
    warmup: int,
    steps: int,
    seed: int,
    device: torch.device,
    precision: str,
) -> float:
    """``lstmbench.train.train`` for one epoch of ``steps`` batches; its ``samples_per_second``."""
    train_config = TrainConfig(
        model=config,
        epochs=1,
        batch_size=BATCH,
        lr=LR,
        augment=True,
        seed=seed,
        device=str(device),
        precision=precision,
    )
    train(train_config, image_data(images, warmup * BATCH), evaluate_test=False)
    result = train(train_config, image_data(images, steps * BATCH), evaluate_test=False)
    return result.samples_per_second


def run_ceiling(
    config: ModelConfig,
    images: Images,
    warmup: int,
    steps: int,
    device: torch.device,
    precision: str,
) -> float:
    """Forward, backward and step only, on float batches made before the clock starts, in the
    given (resolved) precision."""
    model, optimizer = fresh_model(config, len(images.classes), device)
    distinct = min(steps, len(images.y) // BATCH)
    batches = [
        (
            images.x[i * BATCH : (i + 1) * BATCH].to(device).float().div(255),
            images.y[i * BATCH : (i + 1) * BATCH].to(device),
        )
        for i in range(distinct)
    ]
    for i in range(warmup):
        train_step(model, optimizer, *batches[i % distinct], precision)
    loss_sum = torch.zeros((), device=device)
    sync(device)
    started = time.perf_counter()
    for i in range(steps):
        loss_sum += train_step(model, optimizer, *batches[i % distinct], precision)
    sync(device)
    seconds = time.perf_counter() - started
    return steps * BATCH / seconds


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Measured:
    """Every repeat's samples/s of each pipeline for one model, and the busiest share seen."""

    model: str
    runs: dict[str, list[float]] = field(default_factory=dict)
    busy: float = 0.0
    retried: int = 0

    def median(self, pipeline: str) -> float | None:
        values = self.runs.get(pipeline)
        return statistics.median(values) if values else None

    def spread(self, pipeline: str) -> float | None:
        values = self.runs.get(pipeline)
        return (max(values) - min(values)) / statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(m: Measured) -> dict[str, Any]:
    trainer, seed, ceiling = m.median("trainer"), m.median("seed"), m.median("ceiling")
    vs_seed, vs_ceiling = ratio(trainer, seed), ratio(trainer, ceiling)
    target_seed = TARGET_VS_SEED.get(m.model)

    def r(v: float | None, digits: int) -> float | None:
        return None if v is None else round(v, digits)

    row: dict[str, Any] = {
        "model": m.model,
        "trainer_samples_per_s": r(trainer, 1),
        "seed_pipeline_samples_per_s": r(seed, 1),
        "ceiling_samples_per_s": r(ceiling, 1),
        "trainer_vs_seed": r(vs_seed, 3),
        "trainer_vs_ceiling": r(vs_ceiling, 3),
        "seed_pipeline_workers2_samples_per_s": r(m.median("seed_w2"), 1),
        "trainer_vs_seed_workers2": r(ratio(trainer, m.median("seed_w2")), 3),
        "seed_vs_ceiling": r(ratio(seed, ceiling), 3),
        "ceiling_fp32_samples_per_s": r(m.median("ceiling_fp32"), 1),
        "trainer_vs_ceiling_fp32": r(ratio(trainer, m.median("ceiling_fp32")), 3),
        "spread": {p: r(m.spread(p), 3) for p in PIPELINES if p in m.runs},
        "runs_samples_per_s": {
            p: [round(v, 1) for v in m.runs[p]] for p in PIPELINES if p in m.runs
        },
        "max_foreign_cpu_share": round(m.busy, 3),
        "retried_measurements": m.retried,
        "target_trainer_vs_seed": target_seed,
        "target_trainer_vs_ceiling": TARGET_VS_CEILING,
        "meets_targets": bool(
            vs_ceiling is not None
            and vs_ceiling >= TARGET_VS_CEILING
            and (target_seed is None or (vs_seed is not None and vs_seed >= target_seed))
        ),
    }
    return row


def table(rows: list[dict[str, Any]], with_workers: bool) -> str:
    def cell(row: dict[str, Any], key: str, pipeline: str) -> str:
        value = row[key]
        if value is None:
            return "-"
        spread = row["spread"].get(pipeline)
        return f"{value:7.1f} ±{spread * 50:4.1f}%" if spread is not None else f"{value:7.1f}"

    def ratio_cell(value: float | None, target: float | None) -> str:
        if value is None:
            return "-"
        mark = "" if target is None else (" ok" if value >= target else " MISS")
        return f"{value:5.2f}{mark}"

    head = ["model", "trainer /s", "seed nw=0 /s"]
    if with_workers:
        head.append("seed nw=2 /s")
    head.append("ceiling /s")
    with_fp32 = any(row["ceiling_fp32_samples_per_s"] is not None for row in rows)
    if with_fp32:
        head.append("ceiling fp32 /s")
    head += ["trainer/seed", "trainer/ceiling", "busy"]
    lines = [head]
    for row in rows:
        line = [
            row["model"],
            cell(row, "trainer_samples_per_s", "trainer"),
            cell(row, "seed_pipeline_samples_per_s", "seed"),
        ]
        if with_workers:
            line.append(cell(row, "seed_pipeline_workers2_samples_per_s", "seed_w2"))
        line.append(cell(row, "ceiling_samples_per_s", "ceiling"))
        if with_fp32:
            line.append(cell(row, "ceiling_fp32_samples_per_s", "ceiling_fp32"))
        line += [
            ratio_cell(row["trainer_vs_seed"], row["target_trainer_vs_seed"]),
            ratio_cell(row["trainer_vs_ceiling"], row["target_trainer_vs_ceiling"]),
            f"{row['max_foreign_cpu_share'] * 100:3.0f}%",
        ]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        text = "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        out.append(text)
        if n == 0:
            out.append("-" * len(text))
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="also print a JSON list (last line)")
    parser.add_argument("--quick", action="store_true", help="fewer steps: a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per pipeline (3)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (30; quick 8)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (3; quick 2)")
    parser.add_argument("--images", type=int, default=4096, help="images in the subset (4096)")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}"
    )
    parser.add_argument("--no-workers", action="store_true", help="skip the num_workers=2 column")
    parser.add_argument(
        "--wait-idle", type=float, default=20.0, metavar="S",
        help="wait up to S seconds for a quiet machine before each measurement (20; 0: never)",
    )  # fmt: skip
    parser.add_argument(
        "--busy-threshold", type=float, default=0.2, metavar="F",
        help="share of the CPU others may use during a measurement before it is retried (0.2)",
    )  # fmt: skip
    parser.add_argument("--retries", type=int, default=2, help="retries of a busy measurement (2)")
    parser.add_argument(
        "--device", default="cpu",
        help="cpu or cuda[:N] (cpu); on a GPU the images are resident there for the trainer and "
        "the ceiling, and the seed pipeline copies each batch over as the seed did",
    )  # fmt: skip
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="the trainer's and the ceiling's precision (auto, the trainer's default)",
    )  # fmt: skip
    parser.add_argument(
        "--synthetic", action="store_true",
        help="synthetic images of CIFAR-10's shape even where the real ones are present",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if not args.device.startswith("cuda"):
        if args.device != "cpu":
            parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    else:
        args.wait_idle = 0.0  # the GPU does the work; other CPU load matters little
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.steps = args.steps or (8 if args.quick else 30)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.steps * BATCH > args.images or args.warmup * BATCH > args.images:
        parser.error(f"--images must hold --steps and --warmup batches of {BATCH}")
    if args.repeats < 1 or args.steps < 1:
        parser.error("--repeats and --steps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout  # with --json, stdout carries only the JSON
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    precision = resolve_precision(args.precision, device)
    header = header_lines(
        [
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; device {where}; "
            f"trainer and ceiling in {precision} (--precision {args.precision}), seed in fp32"
        ]
    )
    for line in header:
        note(line)
    torch.manual_seed(0)
    started = time.perf_counter()
    images = load_images(args.images, args.synthetic)
    note(f"data: {images.source}, decoded in {time.perf_counter() - started:.1f}s")
    note(f"{args.repeats} repeats x {args.steps} steps of {BATCH}, {args.warmup} warm-up steps")

    loaders = {"seed": seed_loader(images, 0)}
    if not args.no_workers:
        loaders["seed_w2"] = seed_loader(images, 2)
    extra = ("trainer", "ceiling") + (("ceiling_fp32",) if precision != "fp32" else ())
    pipelines = [p for p in PIPELINES if p in loaders or p in extra]  # in order
    meter = CpuMeter()

    def measure(pipeline: str, config: ModelConfig, repeat: int) -> float:
        if pipeline == "trainer":
            return run_trainer(config, images, args.warmup, args.steps, repeat, device, precision)
        if pipeline == "ceiling":
            return run_ceiling(config, images, args.warmup, args.steps, device, precision)
        if pipeline == "ceiling_fp32":
            return run_ceiling(config, images, args.warmup, args.steps, device, "fp32")
        return run_seed(config, images, loaders[pipeline], args.warmup, args.steps, device)

    results: list[Measured] = []
    for name in args.models:
        config = MODELS[name]
        measured = Measured(name, {p: [] for p in pipelines})
        for repeat in range(args.repeats):
            shift = repeat % len(pipelines)
            for pipeline in pipelines[shift:] + pipelines[:shift]:
                value, busy, retried = measure_quietly(
                    functools.partial(measure, pipeline, config, repeat),
                    meter,
                    wait_idle=args.wait_idle,
                    threshold=args.busy_threshold,
                    retries=args.retries,
                    label=f"{name} {pipeline}",
                )
                measured.retried += retried
                measured.busy = max(measured.busy, busy)
                measured.runs[pipeline].append(value)
                note(f"  {name:8s} repeat {repeat + 1} {pipeline:8s} {value:8.1f} samples/s "
                     f"(others {busy:.0%})")  # fmt: skip
        results.append(measured)

    rows = [summarise(m) for m in results]
    for line in header:
        print(line, file=out)
    print(f"data: {images.source}", file=out)
    print(
        f"training samples/s, batch {BATCH}, Adam + cross-entropy: median of {args.repeats} "
        f"repeats x {args.steps} steps (± half the max-min range); busy: the most CPU other "
        "processes took during one measurement",
        file=out,
    )
    print(table(rows, with_workers=not args.no_workers), file=out)
    targets = ", ".join(f"{v} ({k})" for k, v in TARGET_VS_SEED.items())
    print(f"targets: trainer/ceiling >= {TARGET_VS_CEILING}; trainer/seed >= {targets}", file=out)
    print(f"total {time.perf_counter() - started:.0f}s", file=out, flush=True)
    if args.json:
        print(json.dumps(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
