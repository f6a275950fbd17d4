"""Layouts (image → sequence) and the embedding tables, checked against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lstmbench.config import LAYOUTS, ConfigError, EmbeddingConfig
from lstmbench.embeddings import (
    EMBEDDINGS,
    build_embedding,
    channel_table,
    geometry,
    positional_table,
    sinusoidal_2d_table,
    sinusoidal_table,
    to_sequence,
)

B, C, H, W = 2, 3, 4, 5  # deliberately not square, so rows and columns cannot be confused


def coded_images(b: int = B, h: int = H, w: int = W) -> torch.Tensor:
    """Value at (n, c, y, x) is n*10000 + c*1000 + y*100 + x: every value names its origin."""
    n = torch.arange(b).view(b, 1, 1, 1)
    c = torch.arange(C).view(1, C, 1, 1)
    y = torch.arange(h).view(1, 1, h, 1)
    x = torch.arange(w).view(1, 1, 1, w)
    return (n * 10000 + c * 1000 + y * 100 + x).float()


def code(n: int, c: int, y: int, x: int) -> float:
    return float(n * 10000 + c * 1000 + y * 100 + x)


def test_rows_layout() -> None:
    seq = to_sequence(coded_images(), "rows")
    assert seq.shape == (B, H, 3 * W)
    for n in range(B):
        for t in range(H):
            expected = [code(n, c, t, x) for c in range(C) for x in range(W)]  # R row, G row, B row
            assert seq[n, t].tolist() == expected


def test_columns_layout() -> None:
    seq = to_sequence(coded_images(), "columns")
    assert seq.shape == (B, W, 3 * H)
    for n in range(B):
        for t in range(W):
            expected = [code(n, c, y, t) for c in range(C) for y in range(H)]
            assert seq[n, t].tolist() == expected


def test_pixels_layout() -> None:
    seq = to_sequence(coded_images(), "pixels")
    assert seq.shape == (B, H * W, 3)
    for n in range(B):
        for t in range(H * W):
            y, x = divmod(t, W)  # row-major
            assert seq[n, t].tolist() == [code(n, c, y, x) for c in range(C)]


def test_seed_view_is_the_seeds_reshape() -> None:
    x = torch.rand(3, 3, 32, 32)
    seq = to_sequence(x, "seed_view")
    assert torch.equal(seq, x.view(3, 32, 96))
    # It is a reshape, not a permutation: step 0 holds rows 0-2 of the red plane.
    assert torch.equal(seq[:, 0], x[:, 0, 0:3].reshape(3, 96))
    assert not torch.equal(seq, to_sequence(x, "rows"))


def test_unknown_layout() -> None:
    with pytest.raises(ConfigError, match="unknown layout"):
        to_sequence(torch.zeros(1, 3, 4, 4), "diagonal")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_geometry_maps_match_the_layout(layout: str) -> None:
    """geometry's row/col/channel maps say where each sequence value came from."""
    h = w = 8
    geo = geometry(layout, h, w)
    seq = to_sequence(coded_images(b=1, h=h, w=w), layout)[0]
    assert seq.shape == (geo.steps, geo.features)
    assert torch.equal(seq, (geo.channel * 1000 + geo.row * 100 + geo.col).float())


# --- channel ------------------------------------------------------------------------------------

VALUES = (2.0, -0.5, 7.25)


@pytest.mark.parametrize("layout", ["rows", "columns", "pixels"])
def test_channel_table_follows_real_colours(layout: str) -> None:
    geo = geometry(layout, 32, 32)
    table = channel_table(geo, VALUES)
    assert table.shape == (geo.steps, geo.features)
    assert torch.equal(table, torch.tensor(VALUES)[geo.channel])


def test_channel_table_seed_view_uses_assumed_groups() -> None:
    geo = geometry("seed_view", 32, 32)
    table = channel_table(geo, VALUES)
    expected = torch.tensor([VALUES[f // 32] for f in range(96)]).expand(32, 96)
    assert torch.equal(table, expected)
    # ... which is not the real colour of every value (step 10 straddles red and green).
    assert not torch.equal(table, torch.tensor(VALUES)[geo.channel])


@pytest.mark.parametrize("layout", ["rows", "columns", "pixels"])
def test_channel_embedding_adds_per_colour(layout: str) -> None:
    """Adding the chl embedding to an image's sequence = adding r/g/b to its colour planes."""
    cfg = EmbeddingConfig(channel_values=VALUES)
    x = torch.rand(2, 3, 32, 32)
    embedded = build_embedding("chl", geometry(layout, 32, 32), cfg)(to_sequence(x, layout))
    shifted = x + torch.tensor(VALUES).view(1, 3, 1, 1)
    torch.testing.assert_close(embedded, to_sequence(shifted, layout))


# --- positional ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("lo", "hi"), [(1.0, 2.0), (-3.0, 0.5)])
def test_positional_range(layout: str, lo: float, hi: float) -> None:
    table = positional_table(geometry(layout, 32, 32), lo, hi)
    assert table.min().item() == pytest.approx(lo)
    assert table.max().item() == pytest.approx(hi)
    assert (table >= lo - 1e-6).all() and (table <= hi + 1e-6).all()
    assert (table == lo).any() and (table == hi).any()


def test_positional_seed_view_is_the_seeds_ramp() -> None:
    table = positional_table(geometry("seed_view", 32, 32), 1.0, 2.0)
    ramp = torch.linspace(1, 2, 32).repeat(3)
    assert table.shape == (32, 96)
    for t in range(32):
        assert torch.equal(table[t], ramp)


def test_positional_rows_encodes_the_column() -> None:
    geo = geometry("rows", 32, 32)
    table = positional_table(geo, 1.0, 2.0)
    ramp = torch.linspace(1, 2, 32)
    assert torch.equal(table, ramp[geo.col])


def test_positional_pixels_runs_along_steps() -> None:
    geo = geometry("pixels", 8, 8)
    table = positional_table(geo, 0.0, 1.0)
    assert table.shape == (64, 3)
    ramp = torch.linspace(0, 1, 64)
    assert torch.equal(table, ramp[:, None].expand(64, 3))


def test_positional_degenerate_range() -> None:
    table = positional_table(geometry("rows", 32, 32), 1.5, 1.5)
    assert torch.equal(table, torch.full((32, 96), 1.5))


# --- sinusoidal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("base", "scale"), [(10000.0, 1.0), (100.0, 0.25)])
def test_sinusoidal_matches_formula(layout: str, base: float, scale: float) -> None:
    geo = geometry(layout, 16, 16)
    table = sinusoidal_table(geo, base, scale)
    steps, feats = geo.steps, geo.features
    expected = torch.empty(steps, feats, dtype=torch.float64)
    for t in range(steps):
        for f in range(feats):
            i = f // 2
            angle = t / base ** (2 * i / feats)
            expected[t, f] = scale * (math.sin(angle) if f % 2 == 0 else math.cos(angle))
    torch.testing.assert_close(table.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sinusoidal_2d_matches_pixel_codes(layout: str) -> None:
    base, scale = 100.0, 0.5
    geo = geometry(layout, 8, 8)
    table = sinusoidal_2d_table(geo, base, scale)
    assert table.shape == (geo.steps, geo.features)
    half = geo.features // 2
    for t in range(geo.steps):
        for f in range(geo.features):
            pos = geo.row[t, f].item() if f < half else geo.col[t, f].item()
            i = f if f < half else f - half
            angle = pos / base ** (2 * (i // 2) / half)
            value = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert table[t, f].item() == pytest.approx(scale * value, abs=1e-5), (t, f)


def _in_image_space(table: torch.Tensor, layout: str, h: int, w: int) -> torch.Tensor:
    """Put a (T, F) table back where its values came from: (3, H, W)."""
    geo = geometry(layout, h, w)
    image = torch.full((3, h, w), float("nan"))
    image[geo.channel, geo.row, geo.col] = table
    assert not image.isnan().any()
    return image


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sinusoidal_2d_varies_along_rows_and_columns(layout: str) -> None:
    h = w = 8
    geo = geometry(layout, h, w)
    image = _in_image_space(sinusoidal_2d_table(geo, 10000.0, 1.0), layout, h, w)
    assert (image[:, 1:, :] != image[:, :-1, :]).any(), "constant along image rows"
    assert (image[:, :, 1:] != image[:, :, :-1]).any(), "constant along image columns"


def test_sinusoidal_2d_pixels_separates_row_and_column() -> None:
    # pixels: F = 3, so feature 0 (red) carries sin(row) and features 1, 2 carry sin/cos(col).
    h = w = 8
    image = _in_image_space(
        sinusoidal_2d_table(geometry("pixels", h, w), 10000.0, 1.0), "pixels", h, w
    )
    rows = torch.arange(h, dtype=torch.float32)
    cols = torch.arange(w, dtype=torch.float32)
    torch.testing.assert_close(image[0], torch.sin(rows)[:, None].expand(h, w))
    torch.testing.assert_close(image[1], torch.sin(cols)[None, :].expand(h, w))
    torch.testing.assert_close(image[2], torch.cos(cols)[None, :].expand(h, w))


@pytest.mark.parametrize("layout", ["rows", "columns", "seed_view"])
def test_sinusoidal_2d_differs_from_1d(layout: str) -> None:
    geo = geometry(layout, 8, 8)
    assert not torch.allclose(sinusoidal_2d_table(geo, 1e4, 1.0), sinusoidal_table(geo, 1e4, 1.0))


# --- modules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fixed_embeddings_add_their_table(layout: str) -> None:
    cfg = EmbeddingConfig(pos_lo=0.5, pos_hi=4.0, channel_values=VALUES, sin_scale=2.0)
    geo = geometry(layout, 32, 32)
    tables = {
        "pos": positional_table(geo, 0.5, 4.0),
        "chl": channel_table(geo, VALUES),
        "sin": sinusoidal_table(geo, cfg.sin_base, 2.0),
        "sin2d": sinusoidal_2d_table(geo, cfg.sin_base, 2.0),
    }
    seq = torch.rand(2, geo.steps, geo.features)
    for name, table in tables.items():
        module = build_embedding(name, geo, cfg)
        assert not any(p.requires_grad for p in module.parameters()), name
        assert list(module.parameters()) == [], f"{name} has trainable parameters"
        torch.testing.assert_close(module(seq), seq + table)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_learned_zero_init(layout: str) -> None:
    cfg = EmbeddingConfig(learned_init="zero")
    geo = geometry(layout, 32, 32)
    seq = torch.rand(2, geo.steps, geo.features)
    for name in ("learned_pos", "learned_chl"):
        module = build_embedding(name, geo, cfg)
        params = list(module.parameters())
        assert params and all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
        assert all(torch.count_nonzero(p) == 0 for p in params)
        assert torch.equal(module(seq), seq)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_learned_fixed_init_equals_fixed_tables(layout: str) -> None:
    cfg = EmbeddingConfig(pos_lo=-1.0, pos_hi=3.0, channel_values=VALUES, learned_init="fixed")
    geo = geometry(layout, 32, 32)
    seq = torch.rand(2, geo.steps, geo.features)

    pos = build_embedding("learned_pos", geo, cfg)
    assert isinstance(pos.table, nn.Parameter) and pos.table.requires_grad
    assert torch.equal(pos.table.detach(), positional_table(geo, -1.0, 3.0))
    torch.testing.assert_close(pos(seq), build_embedding("pos", geo, cfg)(seq))

    chl = build_embedding("learned_chl", geo, cfg)
    assert isinstance(chl.values, nn.Parameter) and chl.values.requires_grad
    assert chl.values.shape == (geo.steps, 3)
    torch.testing.assert_close(chl(seq), build_embedding("chl", geo, cfg)(seq))


def test_learned_tables_train() -> None:
    geo = geometry("rows", 8, 8)
    module = build_embedding("learned_chl", geo, EmbeddingConfig(learned_init="zero"))
    out = module(torch.zeros(1, geo.steps, geo.features))
    out[0, 0, 0].backward()  # step 0, feature 0 belongs to group 0 (red)
    grad = module.values.grad
    assert grad[0, 0] == 1 and grad.sum() == 1


def test_build_embedding_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown embedding"):
        build_embedding("nope", geometry("rows", 8, 8), EmbeddingConfig())
    assert set(EMBEDDINGS) >= {"pos", "chl", "sin", "sin2d", "learned_pos", "learned_chl"}
