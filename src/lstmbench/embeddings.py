"""Sequence layouts (how an image becomes a sequence) and the embeddings added to that sequence.

A layout turns a batch ``(B, 3, H, W)`` into ``(B, T, F)``:

========== ======= ======= ==========================================================
layout     T       F       step ``t`` holds
========== ======= ======= ==========================================================
rows       H       3W      image row ``t``: its R values, then its G values, then B
columns    W       3H      image column ``t``, grouped by colour the same way
pixels     H*W     3       one pixel's R, G, B (row-major order)
seed_view  H       3W      the seed's ``view(B, 32, 96)`` of the channel-major image
========== ======= ======= ==========================================================

Every layout except ``pixels`` has ``F = 3·G`` features made of three groups of ``G``. In the
``rows``/``columns``/``pixels`` layouts the groups really are R, G and B. In ``seed_view`` they are
what the seed *assumed* were colours: because ``view`` is a reshape and not a permutation, step 0
holds rows 0-2 of the red plane and step 10 straddles red and green.

The seed's embeddings are defined on those groups, so one definition serves every layout:

* positional: feature ``f`` gets ``linspace(lo, hi, G)[f mod G]`` at every step; it encodes the
  position of a value inside its step (the column, for ``rows``). A ``pixels`` step has one
  position, so there the same ramp runs along the steps instead.
* channel: feature ``f`` gets ``(r, g, b)[f div G]`` at every step.
* sinusoidal: ``pe[t, 2i] = sin(t / base^(2i/F))``, ``pe[t, 2i+1] = cos(...)``, times ``scale``.
* sinusoidal 2-D: each value gets the sinusoidal code of the pixel it came from, its row in the
  first half of the features and its column in the second half.

Learned variants make the positional table ``(T, F)`` and the channel table ``(T, 3)`` trainable.
They are per step on purpose: an offset that is the same at every step is, for the LSTM's first
layer, the same as a change of its input bias, so it could add nothing the LSTM cannot learn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lstmbench.config import LAYOUTS, ConfigError, EmbeddingConfig

__all__ = [
    "EMBEDDINGS",
    "SequenceGeometry",
    "build_embedding",
    "channel_table",
    "geometry",
    "positional_table",
    "sinusoidal_2d_table",
    "sinusoidal_table",
    "to_sequence",
]


def to_sequence(images: torch.Tensor, layout: str) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, T, F)`` for ``layout`` (see the module docstring)."""
    b, c, h, w = images.shape
    if layout == "rows":
        return images.permute(0, 2, 1, 3).reshape(b, h, c * w)
    if layout == "columns":
        return images.permute(0, 3, 1, 2).reshape(b, w, c * h)
    if layout == "pixels":
        return images.flatten(2).transpose(1, 2)
    if layout == "seed_view":
        # Exactly the seed's x.view(B, 32, 96) for 32x32 images: a reshape, not a permutation.
        return images.reshape(b, h, c * w)
    raise ConfigError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")


@dataclass(frozen=True)
class SequenceGeometry:
    """Shape of a layout's sequence and where each of its values came from in the image.

    ``row``, ``col`` and ``channel`` are ``(T, F)`` integer maps: the pixel and colour plane of
    the value at step ``t``, feature ``f``.
    """

    layout: str
    steps: int
    features: int
    row: torch.Tensor
    col: torch.Tensor
    channel: torch.Tensor

    @property
    def group_size(self) -> int:
        """Features per (assumed) colour group."""
        return self.features // 3


def geometry(layout: str, height: int, width: int, channels: int = 3) -> SequenceGeometry:
    """The geometry of ``layout`` for ``channels × height × width`` images."""
    shape = (1, channels, height, width)
    row = torch.arange(height).view(1, 1, height, 1).expand(shape)
    col = torch.arange(width).view(1, 1, 1, width).expand(shape)
    chan = torch.arange(channels).view(1, channels, 1, 1).expand(shape)
    maps = [to_sequence(m.contiguous(), layout)[0] for m in (row, col, chan)]
    steps, features = maps[0].shape
    return SequenceGeometry(layout, steps, features, maps[0], maps[1], maps[2])


# --- fixed tables: plain functions, so tests can check them against the formulas ---------------


def positional_table(geo: SequenceGeometry, lo: float, hi: float) -> torch.Tensor:
    """The seed's positional embedding generalised to any layout; values in ``[lo, hi]``."""
    g = geo.group_size
    if g > 1:
        ramp = torch.linspace(lo, hi, g)
        return ramp[torch.arange(geo.features) % g].expand(geo.steps, geo.features).clone()
    ramp = torch.linspace(lo, hi, geo.steps)  # pixels: one position per step
    return ramp[:, None].expand(geo.steps, geo.features).clone()


def channel_table(geo: SequenceGeometry, values: tuple[float, float, float]) -> torch.Tensor:
    """Adds ``values[k]`` to every feature of colour group ``k``, at every step."""
    group = torch.arange(geo.features) // max(geo.group_size, 1)
    return torch.tensor(values, dtype=torch.float32)[group].expand(geo.steps, -1).clone()


def _sinusoid(positions: torch.Tensor, index: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """sin for even ``index``, cos for odd, of ``positions / base^(2·(index//2)/dim)``."""
    freq = base ** (-(2 * (index // 2)).float() / dim)
    angle = positions.float() * freq
    return torch.where(index % 2 == 0, torch.sin(angle), torch.cos(angle))


def sinusoidal_table(geo: SequenceGeometry, base: float, scale: float) -> torch.Tensor:
    """The "Attention is all you need" table over steps × features, times ``scale``."""
    t = torch.arange(geo.steps)[:, None].expand(geo.steps, geo.features)
    f = torch.arange(geo.features)[None, :].expand(geo.steps, geo.features)
    return scale * _sinusoid(t, f, geo.features, base)


def sinusoidal_2d_table(geo: SequenceGeometry, base: float, scale: float) -> torch.Tensor:
    """Each value gets the code of its pixel: row in the first half of features, column after."""
    f = torch.arange(geo.features)[None, :].expand(geo.steps, geo.features)
    half = max(geo.features // 2, 1)
    in_first_half = f < half
    index = torch.where(in_first_half, f, f - half)
    position = torch.where(in_first_half, geo.row, geo.col)
    return scale * _sinusoid(position, index, half, base)


# --- modules --------------------------------------------------------------------------------------


class FixedEmbedding(nn.Module):
    """Adds a constant ``(T, F)`` table; it moves with the model but is never trained."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.float())

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return seq + self.table


class LearnedPositional(nn.Module):
    """A trainable ``(T, F)`` table, initialised from the fixed positional values or zero."""

    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(init.float())

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return seq + self.table


class LearnedChannel(nn.Module):
    """A trainable value per step and colour group, ``(T, 3)``, spread over the group's features."""

    def __init__(self, geo: SequenceGeometry, init: torch.Tensor) -> None:
        super().__init__()
        self.values = nn.Parameter(init.float())
        self.register_buffer("group", torch.arange(geo.features) // max(geo.group_size, 1))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return seq + self.values[:, self.group]


def _learned_pos(geo: SequenceGeometry, cfg: EmbeddingConfig) -> nn.Module:
    init = positional_table(geo, cfg.pos_lo, cfg.pos_hi)
    return LearnedPositional(init if cfg.learned_init == "fixed" else torch.zeros_like(init))


def _learned_chl(geo: SequenceGeometry, cfg: EmbeddingConfig) -> nn.Module:
    start = cfg.channel_values if cfg.learned_init == "fixed" else (0.0, 0.0, 0.0)
    return LearnedChannel(geo, torch.tensor(start).expand(geo.steps, 3).clone())


# name → builder. Variants in models.py name the embeddings they sum.
EMBEDDINGS: dict[str, Callable[[SequenceGeometry, EmbeddingConfig], nn.Module]] = {
    "pos": lambda geo, c: FixedEmbedding(positional_table(geo, c.pos_lo, c.pos_hi)),
    "chl": lambda geo, c: FixedEmbedding(channel_table(geo, c.channel_values)),
    "sin": lambda geo, c: FixedEmbedding(sinusoidal_table(geo, c.sin_base, c.sin_scale)),
    "sin2d": lambda geo, c: FixedEmbedding(sinusoidal_2d_table(geo, c.sin_base, c.sin_scale)),
    "learned_pos": _learned_pos,
    "learned_chl": _learned_chl,
}

# Which EmbeddingConfig fields each embedding reads (the search space suggests only these).
EMBEDDING_FIELDS: dict[str, tuple[str, ...]] = {
    "pos": ("pos_lo", "pos_hi"),
    "chl": ("channel_values",),
    "sin": ("sin_base", "sin_scale"),
    "sin2d": ("sin_base", "sin_scale"),
    "learned_pos": ("learned_init", "pos_lo", "pos_hi"),
    "learned_chl": ("learned_init", "channel_values"),
}


def build_embedding(name: str, geo: SequenceGeometry, cfg: EmbeddingConfig) -> nn.Module:
    """The embedding module ``name`` for a sequence of geometry ``geo``."""
    try:
        builder = EMBEDDINGS[name]
    except KeyError:
        raise ConfigError(
            f"unknown embedding {name!r}; choose one of: {', '.join(EMBEDDINGS)}"
        ) from None
    return builder(geo, cfg)
