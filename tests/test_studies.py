"""The study files the project ships: each one loads, and each says what its header promises."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from lstmbench.models import SEED_VARIANTS, variant_names
from lstmbench.space import load_study_file

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SHIPPED = sorted(STUDIES.glob("*.toml"))


def test_the_four_study_files_are_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"demo", "cifar10", "cifar10-cpu", "seed-replica"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_study_file_validates(path: Path) -> None:
    spec = load_study_file(path)
    assert spec.name == path.stem
    assert spec.target_trials >= len(spec.variants) >= 1
    assert set(spec.variants) <= set(variant_names())


def test_the_packaged_demo_is_the_one_in_studies() -> None:
    """`lstmbench demo` runs the copy inside the package; it must not drift from studies/."""
    packaged = resources.files("lstmbench").joinpath("studies/demo.toml").read_text()
    assert packaged == (STUDIES / "demo.toml").read_text()


def test_the_gpu_search_covers_every_variant_with_hyperband() -> None:
    spec = load_study_file(STUDIES / "cifar10.toml")
    assert set(spec.variants) == set(variant_names())
    assert spec.target_trials >= 200
    assert spec.pruner == "hyperband"
    assert spec.balanced


def test_the_seed_replica_enqueues_the_seed_configurations_and_searches_nothing() -> None:
    spec = load_study_file(STUDIES / "seed-replica.toml")
    assert sorted(p["variant"] for p in spec.enqueue) == sorted(SEED_VARIANTS)
    assert spec.target_trials == len(SEED_VARIANTS)
    assert spec.pruner == "none"
