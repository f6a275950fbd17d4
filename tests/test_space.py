"""The search space: conditional suggestions and the balanced variant rotation (in-memory studies,
no training)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lstmbench.models import get_variant, variant_names
from lstmbench.space import load_study_file, make_sampler, suggest

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.toml"

# What each embedding family must (and must not) be asked for.
POS = {"pos_lo", "pos_hi"}
CHANNEL = {"channel_r", "channel_g", "channel_b"}
SIN = {"sin_scale"}  # sin_base is a constant in the demo study, so it is not a suggested param
LSTM_SHAPE = {"hidden_size", "layout", "readout"}


@pytest.fixture(scope="module")
def spec():
    return load_study_file(DEMO)


def _study(spec, **kwargs) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", sampler=make_sampler(spec), **kwargs)


def _ask(study: optuna.Study, spec) -> tuple[optuna.Trial, object]:
    trial = study.ask()
    return trial, suggest(trial, spec, device="cpu")


def test_balanced_rotation_gives_every_variant_the_same_share(spec) -> None:
    study = _study(spec)
    seen = []
    for _ in range(2 * len(spec.variants)):
        trial, config = _ask(study, spec)
        seen.append(config.model.variant)
        study.tell(trial, 0.5)
    assert Counter(seen) == {v: 2 for v in spec.variants}
    assert seen[: len(spec.variants)] == spec.variants  # in the study file's order


def test_trials_with_a_fixed_variant_do_not_take_another_variants_turn(spec) -> None:
    """An enqueued trial, and the re-run of a lost worker's trial, bring their own variant."""
    study = _study(spec)
    variants = spec.variants
    trial, config = _ask(study, spec)  # slot 0
    assert config.model.variant == variants[0]
    study.tell(trial, 0.5)

    study.enqueue_trial({"variant": "cnn"})  # an enqueued trial: its own variant, no slot
    trial, config = _ask(study, spec)
    assert config.model.variant == "cnn"
    study.tell(trial, 0.5)

    # What RetryFailedTrialCallback adds for a stale trial: WAITING, params set, `failed_trial`.
    lost = study.trials[0]
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=lost.params,
            distributions=lost.distributions,
            system_attrs={"failed_trial": lost.number, "retry_history": [lost.number]},
        )
    )
    trial, config = _ask(study, spec)
    assert config.model.variant == variants[0] and trial.number == 2
    study.tell(trial, 0.5)

    trial, config = _ask(study, spec)  # trial 3 takes slot 1: the rotation goes on unbroken
    assert trial.number == 3 and config.model.variant == variants[1]


@pytest.mark.parametrize("variant", variant_names())
def test_only_the_dimensions_of_a_variant_are_suggested(spec, variant: str) -> None:
    study = _study(spec)
    study.enqueue_trial({"variant": variant, "learned_init": "fixed"})
    trial, config = _ask(study, spec)
    params = set(trial.params)
    v = get_variant(variant)
    assert config.model.variant == variant
    assert (params >= LSTM_SHAPE) == (v.family == "lstm")
    assert (LSTM_SHAPE & params == set()) == (v.family == "cnn")
    uses_pos = any(e in ("pos", "learned_pos") for e in v.embeddings)
    uses_channel = any(e in ("chl", "learned_chl") for e in v.embeddings)
    uses_sin = any(e in ("sin", "sin2d") for e in v.embeddings)
    assert (params >= POS) == uses_pos and (POS & params == set()) == (not uses_pos)
    assert (params >= CHANNEL) == uses_channel
    assert (CHANNEL & params == set()) == (not uses_channel)
    assert (params >= SIN) == uses_sin
    assert ("learned_init" in params) == variant.startswith("lstm_learned")


def test_zero_initialised_learned_tables_skip_their_value_ranges(spec) -> None:
    study = _study(spec)
    study.enqueue_trial({"variant": "lstm_learned_pos_chl", "learned_init": "zero"})
    trial, _ = _ask(study, spec)
    assert not (POS | CHANNEL) & set(trial.params)


def test_positional_range_is_sorted_whatever_the_draws(spec) -> None:
    study = _study(spec)
    study.enqueue_trial({"variant": "lstm_pos", "pos_lo": 0.9, "pos_hi": -0.4})
    _, config = _ask(study, spec)
    assert (config.model.embedding.pos_lo, config.model.embedding.pos_hi) == (-0.4, 0.9)
