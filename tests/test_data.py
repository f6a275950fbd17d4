"""Datasets, their cache, the splits and batched augmentation."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import lstmbench.data as data_mod
from lstmbench.config import ConfigError, DataConfig
from lstmbench.data import (
    SYNTHETIC_CLASSES,
    DataError,
    ImageData,
    augment_batch,
    load,
    load_raw,
    make_synthetic,
    random_crop,
    random_hflip,
    random_rotate,
    stratified_split,
)

CLASSES = ("apple", "banana", "cherry")
PER_CLASS = 10
SOURCE_SIZE = 40  # written at 40x40, loaded at 32x32: the resize path runs


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _hashes(x: torch.Tensor) -> list[bytes]:
    return [img.numpy().tobytes() for img in x]


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_deterministic_in_seed() -> None:
    x1, y1 = make_synthetic(50, 32, seed=3)
    x2, y2 = make_synthetic(50, 32, seed=3)
    x3, y3 = make_synthetic(50, 32, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert not torch.equal(y1, y3)


def test_synthetic_format() -> None:
    x, y = make_synthetic(300, 16, seed=0)
    assert x.dtype == torch.uint8 and x.shape == (300, 3, 16, 16)
    assert y.dtype == torch.int64 and y.shape == (300,)
    assert set(y.tolist()) == set(range(10))
    assert x.float().std() > 10  # not blank
    assert len(set(_hashes(x))) == 300  # every image is different


def test_synthetic_load(small_data: ImageData) -> None:
    d = small_data
    assert d.name == "synthetic"
    assert d.classes == SYNTHETIC_CLASSES and d.num_classes == 10
    assert d.image_size == 32
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        assert y.dtype == torch.int64 and len(x) == len(y)
    assert set(d.train_y.tolist()) == set(range(10))
    assert set(d.test_y.tolist()) == set(range(10))
    assert d.sizes() == {"train": 540, "val": 60, "test": 200}


def test_synthetic_split_seed_changes_data() -> None:
    a = load_raw(DataConfig(synthetic_train=40, synthetic_test=20, split_seed=0))
    b = load_raw(DataConfig(synthetic_train=40, synthetic_test=20, split_seed=0))
    c = load_raw(DataConfig(synthetic_train=40, synthetic_test=20, split_seed=1))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.train_x, c.train_x)
    # train and test come from different generator seeds
    assert not set(_hashes(a.train_x)) & set(_hashes(a.test_x))


# --- splits ---------------------------------------------------------------------------------------


def test_splits_sizes_stratified_disjoint(small_data_config: DataConfig, small_data: ImageData):
    raw = load_raw(small_data_config)
    d = small_data
    # val_fraction of the source's training images is held out
    assert len(d.val_y) == round(small_data_config.val_fraction * len(raw.train_y))
    assert len(d.train_y) + len(d.val_y) == len(raw.train_y)
    assert len(d.test_y) == len(raw.test_y)
    # stratified: every class in validation, in proportion (within one image)
    counts = Counter(d.val_y.tolist())
    raw_counts = Counter(raw.train_y.tolist())
    assert set(counts) == set(range(10))
    for c, n in raw_counts.items():
        assert abs(counts[c] - n * len(d.val_y) / len(raw.train_y)) <= 1
    # no image in two splits; train + val are exactly the source's training images
    train, val, test = (set(_hashes(x)) for x in (d.train_x, d.val_x, d.test_x))
    assert len(train) == len(d.train_y) and len(val) == len(d.val_y)
    assert not train & val and not train & test and not val & test
    assert train | val == set(_hashes(raw.train_x))
    # labels travel with their images
    label_of = dict(zip(_hashes(raw.train_x), raw.train_y.tolist(), strict=True))
    for xs, ys in ((d.train_x, d.train_y), (d.val_x, d.val_y)):
        assert [label_of[h] for h in _hashes(xs)] == ys.tolist()


def test_zero_val_fraction() -> None:
    d = load(DataConfig(synthetic_train=100, synthetic_test=20, val_fraction=0.0))
    assert d.sizes() == {"train": 100, "val": 0, "test": 20}
    assert d.val_x.shape == (0, 3, 32, 32)


def test_limits_exact_and_stratified() -> None:
    cfg = DataConfig(synthetic_train=600, synthetic_test=200, limit_train=100, limit_test=50)
    raw = load_raw(cfg)
    d = load(cfg)
    assert len(d.train_y) + len(d.val_y) == 100
    assert len(d.val_y) == 10
    assert len(d.test_y) == 50
    for limited, source, n in (
        (torch.cat([d.train_y, d.val_y]), raw.train_y, 100),
        (d.test_y, raw.test_y, 50),
    ):
        counts, source_counts = Counter(limited.tolist()), Counter(source.tolist())
        assert set(counts) == set(range(10))
        for c, k in source_counts.items():
            assert abs(counts[c] - k * n / len(source)) <= 1, (c, counts[c], k)
    # the limited images are a subset of the source's
    assert set(_hashes(d.test_x)) <= set(_hashes(raw.test_x))
    assert set(_hashes(d.train_x)) <= set(_hashes(raw.train_x))


def test_limit_larger_than_source_keeps_everything() -> None:
    d = load(DataConfig(synthetic_train=50, synthetic_test=20, limit_train=500, limit_test=500))
    assert len(d.train_y) + len(d.val_y) == 50 and len(d.test_y) == 20


def test_stratified_split_basics() -> None:
    labels = torch.arange(4).repeat_interleave(25)  # 4 classes × 25
    a, b = stratified_split(labels, 20, seed=0)
    assert len(a) == 20 and len(b) == 80
    assert sorted(torch.cat([a, b]).tolist()) == list(range(100))
    assert Counter(labels[a].tolist()) == dict.fromkeys(range(4), 5)
    a2, _ = stratified_split(labels, 20, seed=0)
    a3, _ = stratified_split(labels, 20, seed=1)
    assert torch.equal(a, a2) and not torch.equal(a, a3)
    fa, fb = stratified_split(labels, 0.3, seed=0)
    assert len(fa) == 30 and len(fb) == 70
    assert len(stratified_split(labels, 0, seed=0)[0]) == 0
    assert len(stratified_split(labels, 100, seed=0)[1]) == 0


# --- image folders --------------------------------------------------------------------------------


def _colour(split: int, cls: int, idx: int) -> tuple[int, int, int]:
    """A unique, constant colour per image that encodes where it came from."""
    return (40 + 60 * cls, 5 + 10 * idx, 50 + 100 * split)


def _write_folder(root: Path, split_layout: bool) -> Path:
    splits = [("train", 0), ("test", 1)] if split_layout else [(None, 0)]
    for name, split in splits:
        base = root / name if name else root
        for c, cls in enumerate(CLASSES):
            (base / cls).mkdir(parents=True)
            for i in range(PER_CLASS):
                pixels = np.zeros((SOURCE_SIZE, SOURCE_SIZE, 3), dtype=np.uint8)
                pixels[...] = _colour(split, c, i)
                Image.fromarray(pixels).save(base / cls / f"{i:03d}.png")
        hidden = base / ".thumbnails"  # a hidden folder is not a class
        hidden.mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(hidden / "x.png")
    # noise that must be ignored: a non-image file and a hidden folder
    (root / "README.txt").write_text("not an image")
    return root


def _decode_colour(img: torch.Tensor) -> tuple[int, int, int]:
    flat = img.reshape(3, -1)
    assert (flat == flat[:, :1]).all(), "a constant image did not stay constant"
    return tuple(flat[:, 0].tolist())


def test_imagefolder_split_layout(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "imgs", split_layout=True)
    cfg = DataConfig(dataset="imagefolder", data_dir=str(root), val_fraction=0.2)
    d = load(cfg)
    assert d.classes == CLASSES
    assert d.name.startswith("imagefolder")
    assert d.sizes() == {"train": 24, "val": 6, "test": 30}
    for x in (d.train_x, d.val_x, d.test_x):
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
    seen = set()
    for split, xs, ys in (
        (0, d.train_x, d.train_y),
        (0, d.val_x, d.val_y),
        (1, d.test_x, d.test_y),
    ):
        for img, label in zip(xs, ys.tolist(), strict=True):
            r, g, b = _decode_colour(img)
            assert b == 50 + 100 * split  # it came from the right split folder
            assert r == 40 + 60 * label  # and the label is its class folder's index
            seen.add((r, g, b))
    assert len(seen) == 60  # every file exactly once
    assert Counter(d.test_y.tolist()) == dict.fromkeys(range(3), PER_CLASS)


def test_imagefolder_flat_layout(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "flat", split_layout=False)
    d = load(DataConfig(dataset="imagefolder", data_dir=str(root), val_fraction=0.0))
    assert d.classes == CLASSES
    # a stratified 20 % test split of one folder
    assert d.sizes() == {"train": 24, "val": 0, "test": 6}
    assert Counter(d.test_y.tolist()) == dict.fromkeys(range(3), 2)
    colours = []
    for xs, ys in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
        for img, label in zip(xs, ys.tolist(), strict=True):
            r, g, b = _decode_colour(img)
            assert r == 40 + 60 * label
            colours.append((r, g, b))
    assert len(set(colours)) == 30


def test_imagefolder_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _write_folder(tmp_path / "imgs", split_layout=True)
    cache = tmp_path / "cache"
    cfg = DataConfig(dataset="imagefolder", data_dir=str(root), cache_dir=str(cache))
    calls = []
    lock = threading.Lock()
    real = data_mod.decode_image

    def counting(path: Path, size: int) -> np.ndarray:
        with lock:
            calls.append(path)
        return real(path, size)

    monkeypatch.setattr(data_mod, "decode_image", counting)
    first = load(cfg)
    assert len(calls) == 2 * len(CLASSES) * PER_CLASS
    assert list(cache.glob("imagefolder-*.pt")), "nothing was written to --cache-dir"
    calls.clear()
    second = load(cfg)
    assert calls == []
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert second.classes == first.classes

    # a new file changes the fingerprint: decoded again
    pixels = np.full((SOURCE_SIZE, SOURCE_SIZE, 3), 7, dtype=np.uint8)
    Image.fromarray(pixels).save(root / "train" / "apple" / "new.png")
    third = load(cfg)
    assert len(calls) == 2 * len(CLASSES) * PER_CLASS + 1
    assert len(third.train_y) + len(third.val_y) == len(CLASSES) * PER_CLASS + 1


def test_imagefolder_uses_env_cache_dir(tmp_path: Path, _isolated_cache: Path) -> None:
    root = _write_folder(tmp_path / "imgs", split_layout=True)
    load(DataConfig(dataset="imagefolder", data_dir=str(root)))
    assert list(_isolated_cache.glob("imagefolder-*.pt"))


def test_imagefolder_flat_split_seed_not_served_from_stale_cache(tmp_path: Path) -> None:
    """BUG (data.py, _load_imagefolder): the cache key omits split_seed, but the flat layout's
    train/test split depends on it. A cached split from one seed is returned for another seed."""
    root = _write_folder(tmp_path / "flat", split_layout=False)

    def held_out_colours(seed: int, cache: Path) -> list[tuple[int, int, int]]:
        raw = load_raw(
            DataConfig(
                dataset="imagefolder", data_dir=str(root), split_seed=seed, cache_dir=str(cache)
            )
        )
        return sorted(_decode_colour(img) for img in raw.test_x)

    shared = tmp_path / "shared-cache"
    seed0 = held_out_colours(0, shared)
    fresh_seed1 = held_out_colours(1, tmp_path / "fresh-cache")
    assert seed0 != fresh_seed1  # the split really depends on the seed
    assert held_out_colours(1, shared) == fresh_seed1, "seed 1 got seed 0's cached split"


def test_missing_data_dir(tmp_path: Path) -> None:
    assert issubclass(DataError, ConfigError)
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DataError, match="does not exist"):
        load(DataConfig(dataset="imagefolder", data_dir=str(missing)))


def test_folder_without_images(tmp_path: Path) -> None:
    for cls in CLASSES:
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "notes.txt").write_text("no pictures here")
    with pytest.raises(DataError, match="no images"):
        load(DataConfig(dataset="imagefolder", data_dir=str(tmp_path)))


def test_folder_with_one_class(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="at least 2 classes"):
        load(DataConfig(dataset="imagefolder", data_dir=str(tmp_path)))


def test_imagefolder_needs_data_dir() -> None:
    with pytest.raises(ConfigError, match="--data-dir"):
        DataConfig(dataset="imagefolder")


# --- augmentation ---------------------------------------------------------------------------------


def _batch(n: int = 16, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=_gen(seed))


def test_augment_shapes() -> None:
    x = _batch()
    assert random_crop(x, 3, _gen(0)).shape == x.shape
    assert random_hflip(x, _gen(0)).shape == x.shape
    assert random_rotate(x, 20.0, _gen(0)).shape == x.shape
    out = augment_batch(x, _gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)


def test_hflip_probabilities() -> None:
    x = _batch()
    assert torch.equal(random_hflip(x, _gen(0), p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, _gen(0), p=0.0), x)
    half = random_hflip(x, _gen(0), p=0.5)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(half, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(half, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


@pytest.mark.parametrize("padding", [1, 4])
def test_crop_is_a_shift_of_the_padded_image(padding: int) -> None:
    x = _batch(n=32)
    h, w = x.shape[-2:]
    out = random_crop(x, padding, _gen(1))
    padded = F.pad(x, (padding,) * 4)
    shifts = set()
    for k in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(out[k], padded[k, :, dy : dy + h, dx : dx + w])
        ]
        assert len(matches) == 1, f"image {k} is not a window of its padded input"
        shifts.add(matches[0])
    assert len(shifts) > 1, "every image got the same crop"


@pytest.mark.parametrize("padding", [2, 5])
def test_crop_of_ones_has_narrow_zero_borders(padding: int) -> None:
    x = torch.ones(32, 3, 16, 16)
    out = random_crop(x, padding, _gen(2))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    for img in out:
        ones_rows = img[0].amax(dim=1).nonzero().flatten()
        ones_cols = img[0].amax(dim=0).nonzero().flatten()
        top, bottom = ones_rows.min().item(), 15 - ones_rows.max().item()
        left, right = ones_cols.min().item(), 15 - ones_cols.max().item()
        assert max(top, bottom, left, right) <= padding
        assert min(top, bottom) == 0 and min(left, right) == 0  # zeros on one side at most
        # inside the border it is all ones: a solid rectangle
        inner = img[:, top : 16 - bottom, left : 16 - right]
        assert (inner == 1).all()
        assert img.sum() == 3 * inner[0].numel()


def test_rotate_zero_degrees_is_identity() -> None:
    x = _batch()
    assert torch.equal(random_rotate(x, 0.0, _gen(0)), x)


def test_rotate_is_nearest_neighbour_with_zero_fill() -> None:
    x = torch.randint(1, 200, (8, 3, 16, 16), generator=_gen(5)).float()
    out = random_rotate(x, 30.0, _gen(6))
    assert not torch.equal(out, x)
    for o, i in zip(out, x, strict=True):
        assert set(o.unique().tolist()) <= set(i.unique().tolist()) | {0.0}
    assert (out == 0).any()  # the corners come from outside the image


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, g: random_crop(x, 4, g),
        lambda x, g: random_hflip(x, g),
        lambda x, g: random_rotate(x, 20.0, g),
        lambda x, g: augment_batch(x, g),
    ],
    ids=["crop", "hflip", "rotate", "augment_batch"],
)
def test_augmentation_deterministic_in_generator(fn) -> None:
    x = _batch(n=32)
    a, b, c = fn(x, _gen(11)), fn(x, _gen(11)), fn(x, _gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    ("size", "padding", "degrees"), [(32, 5, 20.0), (12, 3, 45.0), (9, 2, 0.0)]
)
def test_fused_augment_equals_crop_flip_rotate_in_sequence(
    size: int, padding: int, degrees: float
) -> None:
    """augment_batch is one gather standing in for the three reference ops; same draws, same
    images (a pixel may differ only at a float tie of the rotation's rounding)."""
    x = torch.randint(1, 256, (64, 3, size, size), generator=_gen(7)).float()
    for seed in range(5):
        g = _gen(seed)
        reference = random_rotate(random_hflip(random_crop(x, padding, g), g), degrees, g)
        fused = augment_batch(x, _gen(seed), crop_padding=padding, degrees=degrees)
        assert (fused != reference).float().mean().item() <= 1e-4, f"seed {seed}"


def test_fused_augment_works_on_uint8_as_on_float() -> None:
    x8 = torch.randint(0, 256, (32, 3, 16, 16), generator=_gen(8), dtype=torch.uint8)
    out8 = augment_batch(x8, _gen(9))
    assert out8.dtype == torch.uint8
    assert torch.equal(out8.float(), augment_batch(x8.float(), _gen(9)))
