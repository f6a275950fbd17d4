"""The variant registry, the LSTM classifier and the seed's CNN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lstmbench.config import LAYOUTS, ConfigError, ModelConfig
from lstmbench.embeddings import geometry, to_sequence
from lstmbench.models import (
    SEED_VARIANTS,
    LSTMClassifier,
    SeedCNN,
    build,
    count_parameters,
    get_variant,
    variant_names,
)

ALL_VARIANTS = variant_names()
LSTM_VARIANTS = [v for v in ALL_VARIANTS if get_variant(v).family == "lstm"]
NUM_CLASSES = 10
HIDDEN = 16


def _images(batch: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_is_consistent() -> None:
    assert len(ALL_VARIANTS) == len(set(ALL_VARIANTS))
    assert "cnn" in ALL_VARIANTS and "lstm" in ALL_VARIANTS
    assert set(SEED_VARIANTS) <= set(ALL_VARIANTS)
    assert SEED_VARIANTS[0] == "cnn" and len(SEED_VARIANTS) == 7
    for name in ALL_VARIANTS:
        assert get_variant(name).family in ("cnn", "lstm")
    with pytest.raises(ConfigError, match="unknown variant"):
        get_variant("no_such_variant")
    with pytest.raises(ConfigError, match="unknown variant"):
        ModelConfig(variant="no_such_variant")


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_forward_shape_and_gradients(variant: str) -> None:
    torch.manual_seed(0)
    model = build(ModelConfig(variant=variant, hidden_size=HIDDEN), NUM_CLASSES)
    model.train()
    x = _images(batch=4)
    out = model(x)
    assert out.shape == (4, NUM_CLASSES)
    assert torch.isfinite(out).all()

    labels = torch.tensor([0, 3, 7, 9])
    F.cross_entropy(out, labels).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, "a model with nothing to train"
    for name, p in trainable:
        assert p.grad is not None, f"{variant}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{variant}: {name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{variant}: {name} has an all-zero gradient"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", LSTM_VARIANTS)
def test_lstm_layouts_shape(variant: str, layout: str) -> None:
    torch.manual_seed(0)
    model = build(ModelConfig(variant=variant, layout=layout, hidden_size=8), NUM_CLASSES)
    geo = geometry(layout, 32, 32)
    assert model.lstm.input_size == geo.features
    with torch.no_grad():
        out = model(_images(batch=2))
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()


def _lstm_outputs(model: LSTMClassifier, x: torch.Tensor) -> torch.Tensor:
    """The LSTM's per-step outputs, computed outside the classifier's forward."""
    seq = to_sequence(x, model.layout)
    for embed in model.embeddings:
        seq = embed(seq)
    return model.lstm(seq)[0]


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_readouts(readout: str, bidirectional: bool, layers: int) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        variant="lstm_pos_chl",
        hidden_size=HIDDEN,
        layers=layers,
        bidirectional=bidirectional,
        readout=readout,
    )
    model = build(cfg, NUM_CLASSES).eval()
    directions = 2 if bidirectional else 1
    assert model.head.in_features == HIDDEN * directions
    x = _images(batch=3)
    with torch.no_grad():
        out = model(x)
        seq_out = _lstm_outputs(model, x)  # (B, T, H * directions)
        if readout == "mean":
            features = seq_out.mean(dim=1)
        elif bidirectional:
            # forward direction ends at the last step, backward direction at the first
            features = torch.cat([seq_out[:, -1, :HIDDEN], seq_out[:, 0, HIDDEN:]], dim=1)
        else:
            features = seq_out[:, -1]
        expected = model.head(features)
    assert out.shape == (3, NUM_CLASSES)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_mean_and_last_readouts_differ() -> None:
    x = _images(batch=2)
    outs = []
    for readout in ("last", "mean"):
        torch.manual_seed(0)  # same weights for both
        model = build(ModelConfig(variant="lstm", hidden_size=HIDDEN, readout=readout), 10)
        with torch.no_grad():
            outs.append(model.eval()(x))
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("eval_dropout", [True, False])
def test_seed_cnn_eval_dropout(eval_dropout: bool) -> None:
    torch.manual_seed(0)
    model = build(ModelConfig(variant="cnn", seed_eval_dropout=eval_dropout), NUM_CLASSES)
    assert isinstance(model, SeedCNN)
    model.eval()
    x = _images(batch=4)
    with torch.no_grad():
        first, second = model(x), model(x)
    if eval_dropout:
        assert not torch.equal(first, second), "the seed's test-time dropout is not active"
    else:
        assert torch.equal(first, second), "dropout is active in eval mode"


def test_cnn_dropout_active_in_training_mode() -> None:
    torch.manual_seed(0)
    model = build(ModelConfig(variant="cnn"), NUM_CLASSES).train()
    x = _images(batch=4)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_cnn_parameter_count_matches_seed() -> None:
    def conv(cin: int, cout: int) -> int:
        return cin * cout * 3 * 3 + cout

    def batchnorm(c: int) -> int:
        return 2 * c  # weight and bias (running stats are buffers)

    def linear(i: int, o: int) -> int:
        return i * o + o

    expected = (
        conv(3, 16) + conv(16, 16) + conv(16, 36) + conv(36, 36)
        + batchnorm(16) * 2 + batchnorm(36) * 2
        + linear(2304, 512) + linear(512, 10)
    )  # fmt: skip
    assert expected == 1_205_186
    model = build(ModelConfig(variant="cnn"), 10)
    assert count_parameters(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.fc1.in_features == 2304
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 16),
        (16, 16),
        (16, 36),
        (36, 36),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 4


def test_lstm_parameter_count() -> None:
    # rows layout: F = 96 inputs; one layer: 4 gates × (F + H + 2 biases) × H, then the head.
    h = 32
    model = build(ModelConfig(variant="lstm", hidden_size=h), 10)
    expected = 4 * h * (96 + h + 2) + h * 10 + 10
    assert count_parameters(model) == expected
    # Learned tables add exactly their entries: (T, F) positional and (T, 3) channel.
    learned = build(ModelConfig(variant="lstm_learned_pos_chl", hidden_size=h), 10)
    assert count_parameters(learned) == expected + 32 * 96 + 32 * 3
    # Fixed tables add none.
    fixed = build(ModelConfig(variant="lstm_pos_chl", hidden_size=h), 10)
    assert count_parameters(fixed) == expected


def test_build_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError):
        build(ModelConfig(variant="lstm", hidden_size=HIDDEN), num_classes=1)
    with pytest.raises(ConfigError, match="divisible by 4"):
        build(ModelConfig(variant="cnn"), num_classes=10, image_size=30)


def test_cnn_other_image_size() -> None:
    model = build(ModelConfig(variant="cnn"), num_classes=5, image_size=16)
    assert model.fc1.in_features == 36 * 4 * 4
    with torch.no_grad():
        assert model.eval()(_images(batch=2, size=16)).shape == (2, 5)
