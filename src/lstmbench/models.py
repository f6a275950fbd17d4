"""The variant registry, the seed's CNN and the LSTM classifier.

A variant is a name (``cnn``, ``lstm``, ``lstm_pos``, ...) that maps to a :class:`Variant`: its
family, the embeddings it sums onto the LSTM's input, and a one-line description. ``build`` turns a
:class:`~lstmbench.config.ModelConfig` into a module; nothing else in the project branches on
variant names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lstmbench.config import ConfigError, ModelConfig
from lstmbench.embeddings import EMBEDDING_FIELDS, build_embedding, geometry, to_sequence

__all__ = ["SEED_VARIANTS", "VARIANTS", "Variant", "build", "get_variant", "variant_names"]


@dataclass(frozen=True)
class Variant:
    """A registered model variant."""

    name: str
    family: str  # "cnn" or "lstm"
    embeddings: tuple[str, ...]
    description: str

    @property
    def embedding_fields(self) -> tuple[str, ...]:
        """The EmbeddingConfig fields this variant reads, in a stable order."""
        seen: dict[str, None] = {}
        for emb in self.embeddings:
            seen.update(dict.fromkeys(EMBEDDING_FIELDS[emb]))
        return tuple(seen)


VARIANTS: dict[str, Variant] = {}


def register(name: str, family: str, embeddings: tuple[str, ...], description: str) -> None:
    """Add a variant to the registry."""
    if name in VARIANTS:
        raise ValueError(f"variant {name!r} is already registered")
    VARIANTS[name] = Variant(name, family, embeddings, description)


register("cnn", "cnn", (), "the seed's two-block CNN")
register("lstm", "lstm", (), "plain LSTM")
register("lstm_pos", "lstm", ("pos",), "LSTM + fixed positional ramp (seed)")
register("lstm_chl", "lstm", ("chl",), "LSTM + fixed channel offsets (seed)")
register("lstm_pos_chl", "lstm", ("pos", "chl"), "LSTM + positional + channel (seed)")
register("lstm_sin", "lstm", ("sin",), "LSTM + sinusoidal (seed)")
register("lstm_sin_chl", "lstm", ("sin", "chl"), "LSTM + sinusoidal + channel (seed)")
register("lstm_learned_pos", "lstm", ("learned_pos",), "LSTM + trainable positional table")
register("lstm_learned_chl", "lstm", ("learned_chl",), "LSTM + trainable channel table")
register(
    "lstm_learned_pos_chl",
    "lstm",
    ("learned_pos", "learned_chl"),
    "LSTM + trainable positional + channel tables",
)
register("lstm_sin2d", "lstm", ("sin2d",), "LSTM + 2-D sinusoidal (row and column)")

# The seed study's seven configurations, in its table's order.
SEED_VARIANTS = ("cnn", "lstm", "lstm_pos", "lstm_chl", "lstm_pos_chl", "lstm_sin", "lstm_sin_chl")


def variant_names() -> list[str]:
    """Every registered variant name, in registration order."""
    return list(VARIANTS)


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}"
        ) from None


class SeedCNN(nn.Module):
    """The seed's CNN: two conv blocks (conv, ReLU, BatchNorm ×2, max-pool), then a 2-layer head.

    ``eval_dropout=True`` keeps the seed's bug: its dropouts were ``F.dropout`` calls that stayed
    active at test time.
    """

    def __init__(self, num_classes: int, image_size: int = 32, eval_dropout: bool = False) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(),
                nn.BatchNorm2d(cout),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.ReLU(),
                nn.BatchNorm2d(cout),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(3, 16), block(16, 36))
        flat = 36 * (image_size // 4) ** 2  # 2304 at 32x32, as in the seed
        self.fc1 = nn.Linear(flat, 512)
        self.fc2 = nn.Linear(512, num_classes)
        self.eval_dropout = eval_dropout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        drop = self.training or self.eval_dropout
        x = self.features(images).flatten(1)
        x = F.relu(self.fc1(F.dropout(x, 0.5, training=drop)))
        return self.fc2(F.dropout(x, 0.2, training=drop))


class LSTMClassifier(nn.Module):
    """Image → sequence (a layout) → + embeddings → LSTM → readout → linear."""

    def __init__(self, config: ModelConfig, num_classes: int, image_size: int = 32) -> None:
        super().__init__()
        self.layout = config.layout
        self.readout = config.readout
        geo = geometry(config.layout, image_size, image_size)
        variant = get_variant(config.variant)
        self.embeddings = nn.ModuleList(
            build_embedding(name, geo, config.embedding) for name in variant.embeddings
        )
        self.lstm = nn.LSTM(
            input_size=geo.features,
            hidden_size=config.hidden_size,
            num_layers=config.layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(config.hidden_size * directions, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        seq = to_sequence(images, self.layout)
        for embed in self.embeddings:  # embeddings compose by summation
            seq = embed(seq)
        out, (h_n, _) = self.lstm(seq)  # zero initial state, as in the seed
        if self.readout == "mean":
            features = out.mean(dim=1)
        elif self.lstm.bidirectional:
            # Each direction's own last step: forward ends at T-1, backward ends at 0.
            features = torch.cat([h_n[-2], h_n[-1]], dim=1)
        else:
            features = h_n[-1]  # == out[:, -1], the seed's readout
        return self.head(features)


def _build_cnn(config: ModelConfig, num_classes: int, image_size: int) -> nn.Module:
    if image_size % 4:
        raise ConfigError(f"the CNN needs an image size divisible by 4, got {image_size}")
    return SeedCNN(num_classes, image_size, eval_dropout=config.seed_eval_dropout)


# family → builder; a variant names its family, so adding a variant never touches this.
FAMILIES = {"cnn": _build_cnn, "lstm": LSTMClassifier}


def build(config: ModelConfig, num_classes: int, image_size: int = 32) -> nn.Module:
    """The module for ``config``."""
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    return FAMILIES[get_variant(config.variant).family](config, num_classes, image_size)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
