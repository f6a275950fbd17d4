"""Datasets as uint8 tensors, their cache, train/validation/test splits and batched augmentation.

Images are decoded once, resized to ``image_size`` and kept as ``uint8`` tensors ``(N, 3, S, S)``;
decoded file-based datasets are cached on disk, keyed by source and size, so a second load reads
one file instead of decoding thousands. Training moves the tensors to its device once and
augments whole batches there (random crop with padding, horizontal flip, rotation), which is what
frees the trainer from the per-sample PIL pipeline that set the seed's pace.

Splits: the source's own train/test (or a fixed-seed stratified split of one folder), then a
stratified validation split held out from train. The search optimises on validation; the test split
is for final evaluation only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from PIL import Image
from sklearn.model_selection import train_test_split

from lstmbench.config import ConfigError, DataConfig

__all__ = [
    "SOURCES",
    "DataError",
    "ImageData",
    "RawSplits",
    "augment_batch",
    "load",
    "load_raw",
    "make_synthetic",
    "random_crop",
    "random_hflip",
    "random_rotate",
    "stratified_split",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
CACHE_VERSION = 1  # bump when the decoded format changes


class DataError(ConfigError):
    """Data that cannot be found or read; the message says where to look and what to pass."""


@dataclass(frozen=True)
class RawSplits:
    """A source's own train and test images, before limits and the validation split."""

    train_x: torch.Tensor  # uint8 (N, 3, S, S)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]


@dataclass(frozen=True)
class ImageData:
    """Train, validation and test images as uint8 tensors, ready for any device."""

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


# --- splitting ------------------------------------------------------------------------------------


def stratified_split(
    labels: torch.Tensor, first: int | float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(first_part, rest)``, stratified by label, with ``first`` items (or a fraction).

    Falls back to a seeded random split when some class is too small to stratify.
    """
    n = len(labels)
    size = first if isinstance(first, int) else round(first * n)
    if size <= 0:
        return torch.empty(0, dtype=torch.long), torch.arange(n)
    if size >= n:
        return torch.arange(n), torch.empty(0, dtype=torch.long)
    index = np.arange(n)
    try:
        a, b = train_test_split(
            index, train_size=size, stratify=labels.numpy(), random_state=seed, shuffle=True
        )
    except ValueError:
        log.warning("a class is too small to stratify %d of %d items; splitting at random", size, n)
        a, b = train_test_split(index, train_size=size, random_state=seed, shuffle=True)
    return torch.from_numpy(np.sort(a)), torch.from_numpy(np.sort(b))


# --- synthetic ------------------------------------------------------------------------------------

# Five colours × two places = ten classes: neither colour nor place alone gives the label.
SYNTHETIC_COLOURS = torch.tensor(
    [
        [0.90, 0.15, 0.10],
        [0.10, 0.80, 0.20],
        [0.15, 0.30, 0.95],
        [0.90, 0.85, 0.10],
        [0.80, 0.20, 0.85],
    ]
)
SYNTHETIC_PLACES = torch.tensor([[0.30, 0.30], [0.70, 0.70]])  # (row, col) as a fraction of size
SYNTHETIC_CLASSES = tuple(
    f"{colour}-{place}"
    for place in ("upper-left", "lower-right")
    for colour in ("red", "green", "blue", "yellow", "magenta")
)


def make_synthetic(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` labelled ``size × size`` RGB images, deterministic in ``seed``.

    Class ``c`` is a disc of colour ``c mod 5`` near place ``c div 5``, drawn over a random
    gradient background with noise, after a smaller distractor disc of a random palette colour at
    a random place. Position and colour jitter and the distractor keep it from being trivial.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")

    def disc(centre: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        dist2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
        return (dist2 <= radius[:, None, None] ** 2).float()[:, None]  # (n, 1, S, S)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    # Background: a random dim colour with a random linear gradient.
    base = rand(n, 3, 1, 1) * 0.5
    slope = (rand(n, 3, 2) - 0.5) * 0.6
    ramp = slope[..., 0, None, None] * yy / size + slope[..., 1, None, None] * xx / size
    images = base + ramp

    # Distractor: smaller, any palette colour, anywhere.
    d_colour = SYNTHETIC_COLOURS[torch.randint(0, 5, (n,), generator=g)][:, :, None, None]
    d_mask = disc(rand(n, 2) * size, size * (0.08 + rand(n) * 0.08))
    images = images * (1 - d_mask) + d_mask * d_colour

    # The object: its colour and place are the label.
    colour = SYNTHETIC_COLOURS[labels % 5] + (rand(n, 3) - 0.5) * 0.3
    centre = SYNTHETIC_PLACES[labels // 5] * size + (rand(n, 2) - 0.5) * size * 0.4
    mask = disc(centre, size * (0.12 + rand(n) * 0.08))
    images = images * (1 - mask) + mask * colour[:, :, None, None]

    images = images + torch.randn(n, 3, size, size, generator=g) * 0.2
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


def _load_synthetic(cfg: DataConfig) -> RawSplits:
    # Train and test come from different seeds so they never share an image.
    train_x, train_y = make_synthetic(cfg.synthetic_train, cfg.image_size, seed=2 * cfg.split_seed)
    test_x, test_y = make_synthetic(cfg.synthetic_test, cfg.image_size, seed=2 * cfg.split_seed + 1)
    return RawSplits(train_x, train_y, test_x, test_y, SYNTHETIC_CLASSES)


# --- decoding files ---------------------------------------------------------------------------


def _resize_array(img: Image.Image, size: int) -> np.ndarray:
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image file → ``(S, S, 3)`` uint8, converted to RGB."""
    with Image.open(path) as img:
        return _resize_array(img.convert("RGB"), size)


def _decode_many(paths: list[Path], size: int) -> torch.Tensor:
    if not paths:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda p: decode_image(p, size), paths, chunksize=256))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _list_class_dir(root: Path) -> dict[str, list[Path]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {
        c: sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for c in classes
    }


def _files_fingerprint(paths: Iterable[Path]) -> str:
    """Changes when a file is added, removed or rewritten; cheap (one stat per file)."""
    digest = hashlib.sha1()
    for p in paths:
        st = p.stat()
        digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _cached(cfg: DataConfig, key: str, build: Callable[[], RawSplits]) -> RawSplits:
    """Load ``key`` from the cache, or build it, save it, and return it.

    A file lock makes parallel workers that start together decode once, not once each.
    """
    cache_dir = cache_root(cfg)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}-{cfg.image_size}px-v{CACHE_VERSION}.pt"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            log.info("loading cached tensors from %s", path)
            blob = torch.load(path, weights_only=True)
            blob["classes"] = tuple(blob["classes"])
            return RawSplits(**blob)
        log.info("decoding %s at %dpx (cached afterwards in %s)", key, cfg.image_size, path)
        raw = build()
        tmp = path.with_suffix(".tmp")
        blob = {**raw.__dict__, "classes": list(raw.classes)}
        torch.save(blob, tmp)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
        return raw


def cache_root(cfg: DataConfig) -> Path:
    """``--cache-dir``, else ``$LSTMBENCH_CACHE_DIR``, else ``~/.cache/lstmbench``."""
    if cfg.cache_dir or os.environ.get("LSTMBENCH_CACHE_DIR"):
        return Path(cfg.cache_dir or os.environ["LSTMBENCH_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lstmbench"


def _require_dir(cfg: DataConfig) -> Path:
    root = Path(cfg.data_dir or "").expanduser()
    if not cfg.data_dir or not root.is_dir():
        raise DataError(f"data directory {cfg.data_dir!r} does not exist; check --data-dir")
    return root.resolve()


def _load_imagefolder(cfg: DataConfig) -> RawSplits:
    root = _require_dir(cfg)
    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    if split_layout:
        train_files, test_files = _list_class_dir(root / "train"), _list_class_dir(root / "test")
        classes = sorted(set(train_files) | set(test_files))
    else:
        train_files, test_files = _list_class_dir(root), {}
        classes = sorted(train_files)
    all_paths = [
        p for files in (train_files, test_files) for c in classes for p in files.get(c, [])
    ]
    if len(classes) < 2 or not all_paths:
        raise DataError(
            f"no images in class folders under {root}; expected DIR/train/<class>/*.jpg and "
            "DIR/test/<class>/*.jpg, or DIR/<class>/*.jpg, with at least 2 classes"
        )
    key = f"imagefolder-{_files_fingerprint(all_paths)}"
    if not split_layout:  # the 80/20 split depends on the seed, so the cache must too
        key += f"-split{cfg.split_seed}"

    def build() -> RawSplits:
        def decode(files: dict[str, list[Path]]) -> tuple[torch.Tensor, torch.Tensor]:
            paths = [p for c in classes for p in files.get(c, [])]
            labels = [i for i, c in enumerate(classes) for _ in files.get(c, [])]
            return _decode_many(paths, cfg.image_size), torch.tensor(labels, dtype=torch.long)

        x, y = decode(train_files)
        if split_layout:
            tx, ty = decode(test_files)
            return RawSplits(x, y, tx, ty, tuple(classes))
        test_idx, train_idx = stratified_split(y, 0.2, cfg.split_seed)
        return RawSplits(x[train_idx], y[train_idx], x[test_idx], y[test_idx], tuple(classes))

    return _cached(cfg, key, build)


def _torchvision_root(cfg: DataConfig) -> Path:
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser().resolve()
    return cache_root(cfg) / "torchvision"


def _open_torchvision(name: str, cfg: DataConfig, factory: Callable[..., object]) -> object:
    """Construct a torchvision dataset, turning "not found" into one actionable line."""
    root = _torchvision_root(cfg)
    try:
        return factory(str(root), download=cfg.download)
    except (RuntimeError, OSError) as exc:
        how = "--download could not fetch it (no network?); " if cfg.download else ""
        raise DataError(
            f"{name} not found under {root} ({exc.__class__.__name__}); {how}pass --download to "
            f"fetch it, --data-dir to point at a local copy, or use --dataset imagefolder "
            f"--data-dir DIR for images on disk"
        ) from None


def _load_cifar10(cfg: DataConfig) -> RawSplits:
    from torchvision.datasets import CIFAR10

    def split(train: bool) -> CIFAR10:
        return _open_torchvision(  # type: ignore[return-value]
            "CIFAR-10", cfg, lambda root, download: CIFAR10(root, train=train, download=download)
        )

    def tensors(ds: CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # already uint8 32x32
        if cfg.image_size != 32:
            x = F.interpolate(x.float(), size=cfg.image_size, mode="bilinear", antialias=True)
            x = x.round().clamp(0, 255).to(torch.uint8)
        return x, torch.tensor(ds.targets, dtype=torch.long)

    train, test = split(True), split(False)
    return RawSplits(*tensors(train), *tensors(test), tuple(train.classes))


def _decode_dataset(
    ds: object, size: int, keep: Callable[[Image.Image], bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    arrays, labels = [], []
    for i in range(len(ds)):  # type: ignore[arg-type]
        img, label = ds[i]  # type: ignore[index]
        if keep(img):
            arrays.append(_resize_array(img.convert("RGB"), size))
            labels.append(int(label))
        img.close()
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long)


def _load_caltech101(cfg: DataConfig) -> RawSplits:
    from torchvision.datasets import Caltech101

    def build() -> RawSplits:
        ds = _open_torchvision(
            "Caltech101",
            cfg,
            lambda root, download: Caltech101(root, "category", download=download),
        )
        # As in the seed: only images that really are RGB (the dataset has grayscale ones).
        x, y = _decode_dataset(ds, cfg.image_size, keep=lambda img: img.mode == "RGB")
        test_idx, train_idx = stratified_split(y, 0.2, cfg.split_seed)
        classes = tuple(ds.categories)  # type: ignore[attr-defined]
        return RawSplits(x[train_idx], y[train_idx], x[test_idx], y[test_idx], classes)

    return _cached(cfg, f"caltech101-split{cfg.split_seed}", build)


def _load_flowers102(cfg: DataConfig) -> RawSplits:
    from torchvision.datasets import Flowers102

    def build() -> RawSplits:
        def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            ds = _open_torchvision(
                "Flowers102", cfg, lambda root, download: Flowers102(root, name, download=download)
            )
            return _decode_dataset(ds, cfg.image_size, keep=lambda img: True)

        (x, y), (tx, ty) = split("train"), split("test")
        # 102 classes (the seed's 1000-way head was a bug).
        return RawSplits(x, y, tx, ty, tuple(f"flower_{i}" for i in range(102)))

    return _cached(cfg, "flowers102", build)


# name → loader of the source's raw train/test splits.
SOURCES: dict[str, Callable[[DataConfig], RawSplits]] = {
    "synthetic": _load_synthetic,
    "cifar10": _load_cifar10,
    "caltech101": _load_caltech101,
    "flowers102": _load_flowers102,
    "imagefolder": _load_imagefolder,
}


def load_raw(cfg: DataConfig) -> RawSplits:
    """The source's own train and test splits (decoded once, then from the cache)."""
    return SOURCES[cfg.dataset](cfg)


def load(cfg: DataConfig) -> ImageData:
    """Images for ``cfg``: limits applied (stratified), then validation held out from train."""
    raw = load_raw(cfg)
    train_x, train_y, test_x, test_y = raw.train_x, raw.train_y, raw.test_x, raw.test_y
    if cfg.limit_train is not None and cfg.limit_train < len(train_y):
        keep, _ = stratified_split(train_y, cfg.limit_train, cfg.split_seed)
        train_x, train_y = train_x[keep], train_y[keep]
    if cfg.limit_test is not None and cfg.limit_test < len(test_y):
        keep, _ = stratified_split(test_y, cfg.limit_test, cfg.split_seed)
        test_x, test_y = test_x[keep], test_y[keep]
    val_idx, fit_idx = stratified_split(train_y, cfg.val_fraction, cfg.split_seed + 1)
    name = (
        cfg.dataset if cfg.dataset != "imagefolder" else f"imagefolder:{Path(cfg.data_dir or '')}"
    )
    return ImageData(
        name=name,
        classes=raw.classes,
        train_x=train_x[fit_idx],
        train_y=train_y[fit_idx],
        val_x=train_x[val_idx],
        val_y=train_y[val_idx],
        test_x=test_x,
        test_y=test_y,
    )


# --- batched augmentation (on the training device) ------------------------------------------------


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut a random ``H × W`` window per image (torchvision's
    RandomCrop(padding=...), for a whole batch at once)."""
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_hflip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_rotate(images: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image about its centre by a uniform angle in ``±degrees``; nearest-neighbour,
    zero fill (torchvision RandomRotation's defaults)."""
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator, device=images.device) * 2 - 1) * degrees
    rad = torch.deg2rad(angle)
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros_like(rad)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    crop_padding: int = 5,
    flip_p: float = 0.5,
    degrees: float = 20.0,
) -> torch.Tensor:
    """The seed's training augmentation (crop, flip, rotation) for a whole batch, as one gather.

    The same images as ``random_rotate(random_hflip(random_crop(...)))`` from the same generator
    (same draws, in the same order; a pixel can differ only where a rotated coordinate lands
    within float rounding of a half-pixel tie), at a fraction of the cost: all three are
    nearest-neighbour maps, so their composition is one map from each output pixel to a source
    pixel, or to the zero fill. One gather replaces a pad, an indexed crop, a flip and a
    ``grid_sample``, and it works on any dtype, so the trainer augments the uint8 batch and
    converts to float once afterwards.
    """
    b, c, h, w = images.shape
    dev = images.device
    # Draw exactly what the three reference ops draw, in their order.
    dy = torch.randint(0, 2 * crop_padding + 1, (b,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * crop_padding + 1, (b,), generator=generator, device=dev)
    flip = torch.rand(b, generator=generator, device=dev) < flip_p
    rad = torch.deg2rad((torch.rand(b, generator=generator, device=dev) * 2 - 1) * degrees)
    cos, sin = torch.cos(rad)[:, None, None], torch.sin(rad)[:, None, None]
    # Where each output pixel samples the cropped, flipped image: random_rotate's affine grid
    # unnormalised as grid_sample does (align_corners=False), in pixels from the centre. The
    # terms are (B, 1, W) and (B, H, 1), so only their sum is a full-size tensor. A flip mirrors
    # the column about the centre, and since rounding is symmetric it folds into the signs.
    xc = (torch.arange(w, device=dev) - (w - 1) / 2)[None, None, :]
    yc = (torch.arange(h, device=dev) - (h - 1) / 2)[None, :, None]
    mirror = torch.where(flip, -1.0, 1.0)[:, None, None]
    col = torch.round(mirror * cos * xc + (-mirror * sin * (w / h) * yc + (w - 1) / 2))
    row = torch.round(sin * (h / w) * xc + (cos * yc + (h - 1) / 2))
    # The pixel must lie inside the rotated image (else rotation's zero fill) and, moved by the
    # crop offset, inside the original image (else the crop's zero padding).
    # Everything stays in col's float dtype until the final index (exact: values are < 2**24);
    # mixing in the integer offsets would convert a full-size tensor at every comparison.
    shift_x = (dx - crop_padding).to(col.dtype)[:, None, None]
    shift_y = (dy - crop_padding).to(col.dtype)[:, None, None]
    inside = (
        (col >= (-shift_x).clamp(min=0))
        & (col < (w - shift_x).clamp(max=w))
        & (row >= (-shift_y).clamp(min=0))
        & (row < (h - shift_y).clamp(max=h))
    )
    index = torch.add(col, row, alpha=w).add_(shift_y * w + shift_x)
    # Outside pixels read index h*w: a zero pixel appended to every channel.
    index = index.masked_fill_(~inside, h * w).long().view(b, 1, h * w).expand(b, c, h * w)
    source = torch.cat([images.reshape(b, c, h * w), images.new_zeros(b, c, 1)], dim=2)
    return source.gather(2, index).view(b, c, h, w)
