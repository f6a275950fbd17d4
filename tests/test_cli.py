"""The ``lstmbench`` command: JSON output, the seed reproduction and one-line errors."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lstmbench.data as data_mod
from lstmbench.cli import main
from lstmbench.models import SEED_VARIANTS
from lstmbench.report import fmt, print_reproduce_table
from lstmbench.seed import published, seed_configs

SUMMARY_KEYS = {
    "variant",
    "dataset",
    "test_accuracy",
    "test_macro_f1",
    "val_accuracy",
    "params",
    "train_seconds",
    "samples_per_second",
}
SEED_CNN_PARAMS = 1_205_186
# Real data lives outside the project, in ../shared, and is optional.
SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"

TINY_TRAIN = [
    "train", "--variant", "lstm", "--hidden-size", "16", "--epochs", "1", "--batch-size", "64",
    "--dataset", "synthetic", "--limit-train", "300", "--limit-test", "100", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _generate_synthetic_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI always builds the default 10000 + 2000 synthetic images (about 2 s); they are a
    pure function of size and seed, so in-process tests share one copy of them."""
    real = data_mod.make_synthetic

    def memoised(n: int, size: int, seed: int):
        key = (n, size, seed)
        if key not in _SYNTHETIC:
            _SYNTHETIC[key] = real(n, size, seed)
        return _SYNTHETIC[key]

    monkeypatch.setattr(data_mod, "make_synthetic", memoised)


_SYNTHETIC: dict[tuple[int, int, int], tuple] = {}


def run_cli(argv: list[str]) -> int:
    """``main(argv)``'s exit status, whether it returns it or argparse raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def assert_one_line_error(code: int, capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr, got {err!r}"
    assert "error" in lines[0]
    return lines[0]


def check_summary(summary: dict, variant: str, dataset_prefix: str) -> None:
    assert set(summary) >= SUMMARY_KEYS
    assert summary["variant"] == variant
    assert summary["dataset"].startswith(dataset_prefix)
    for key in ("test_accuracy", "test_macro_f1"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["params"] > 0
    assert summary["train_seconds"] > 0 and summary["samples_per_second"] > 0


# --- train ----------------------------------------------------------------------------------------


def test_train_json(capsys) -> None:
    code = run_cli([*TINY_TRAIN, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    summary = json.loads(out)  # the whole of stdout is one JSON object
    assert isinstance(summary, dict)
    check_summary(summary, "lstm", "synthetic")
    assert 0.0 <= summary["val_accuracy"] <= 1.0
    assert summary["config"]["model"]["hidden_size"] == 16
    assert summary["config"]["data"]["limit_train"] == 300
    assert summary["epochs"] == 1 and summary["device"] == "cpu"


def test_train_table(capsys) -> None:
    code = run_cli([*TINY_TRAIN, "--variant", "lstm_pos", "--layout", "columns"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "lstm_pos on synthetic" in out
    assert "columns / 16" in out
    assert "train 270 · val 30 · test 100" in out


def test_reproduce_json(capsys) -> None:
    argv = ["reproduce", "--dataset", "synthetic", "--epochs", "1", "--limit-train", "300",
            "--limit-test", "100", "--device", "cpu", "--json"]  # fmt: skip
    code = run_cli(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    summaries = json.loads(out)
    assert isinstance(summaries, list) and len(summaries) == 7
    assert [s["variant"] for s in summaries] == list(SEED_VARIANTS)
    assert summaries[0]["variant"] == "cnn"
    for s in summaries:
        check_summary(s, s["variant"], "synthetic")
        assert 0.0 <= s["train_accuracy"] <= 1.0  # the seed also scored the training images
        assert s["val_accuracy"] is None  # no validation split, as in the seed
        assert s["layout"] == "seed_view"
        assert s["config"]["model"]["hidden_size"] == 512
        assert s["config"]["batch_size"] == 128 and s["config"]["lr"] == 1e-3
    assert summaries[0]["params"] == SEED_CNN_PARAMS
    assert summaries[0]["config"]["model"]["seed_eval_dropout"] is True


def test_reproduce_prints_its_table(capsys) -> None:
    """Without --json, reproduce ends in the table beside the seed's figures, not a traceback."""
    argv = ["reproduce", "--dataset", "synthetic", "--epochs", "1", "--limit-train", "260",
            "--limit-test", "50", "--device", "cpu"]  # fmt: skip
    code = run_cli(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Seed study reproduced on synthetic" in out and "fp32" in out
    for v in SEED_VARIANTS:
        assert v in out


def test_console_script_entry_point(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "lstmbench"
    if not script.exists():
        script = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "lstmbench"
    assert script.exists(), f"console script not installed at {script}"
    env = {**os.environ, "LSTMBENCH_CACHE_DIR": str(tmp_path), "LSTMBENCH_THREADS": "2"}
    proc = subprocess.run(
        [str(script), *TINY_TRAIN, "--variant", "cnn", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    check_summary(summary, "cnn", "synthetic")
    assert summary["params"] == SEED_CNN_PARAMS


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--variant", "nope"], "unknown variant"),
        (["--layout", "diagonal"], "unknown layout"),
        (["--dataset", "mnist"], "unknown dataset"),
        (["--hidden-size", "0"], "hidden size"),
        (["--pos-range", "3", "1"], "inverted"),
        (["--channel-values", "1", "2"], "--channel-values"),
        (["--dataset", "imagefolder", "--data-dir", "/nonexistent"], "--data-dir"),
        (["--dataset", "imagefolder"], "--data-dir"),
        (["--epochs", "0"], "epochs"),
        (["--device", "tpu"], "unknown device"),
        (["--batch-size", "1000"], "fewer than one batch"),
    ],
    ids=[
        "variant",
        "layout",
        "dataset",
        "hidden-0",
        "pos-range",
        "channel-values",
        "missing-data-dir",
        "imagefolder-without-dir",
        "epochs-0",
        "device",
        "batch-too-big",
    ],
)
def test_train_errors(args: list[str], needle: str, capsys) -> None:
    line = assert_one_line_error(run_cli([*TINY_TRAIN, *args]), capsys)
    assert needle in line


def test_cifar10_not_found(tmp_path: Path, capsys) -> None:
    argv = ["reproduce", "--dataset", "cifar10", "--cache-dir", str(tmp_path), "--epochs", "1",
            "--device", "cpu", "--json"]  # fmt: skip
    line = assert_one_line_error(run_cli(argv), capsys)
    assert "--data-dir" in line and "imagefolder" in line


def test_missing_subcommand_and_unknown_option(capsys) -> None:
    assert_one_line_error(run_cli([]), capsys)
    assert_one_line_error(run_cli(["train", "--variant", "lstm", "--no-such-flag"]), capsys)


# --- the seed study and its report ----------------------------------------------------------------


def test_seed_configs_are_the_seeds() -> None:
    from lstmbench.config import DataConfig

    configs = seed_configs(DataConfig(), epochs=10)
    assert [c.model.variant for c in configs] == list(SEED_VARIANTS)
    for c in configs:
        assert c.model.layout == "seed_view" and c.model.hidden_size == 512
        assert c.model.layers == 1 and c.model.readout == "last"
        assert (c.batch_size, c.lr, c.epochs) == (128, 1e-3, 10)
        assert c.augment and not c.normalize
        assert c.model.embedding.channel_values == (2.0, 2.5, 3.0)
        assert (c.model.embedding.pos_lo, c.model.embedding.pos_hi) == (1.0, 2.0)
        assert c.model.seed_eval_dropout is True
    fixed = seed_configs(DataConfig(), keep_seed_bugs=False)
    assert not any(c.model.seed_eval_dropout for c in fixed)


def test_published_figures() -> None:
    cifar = published("cifar10")
    assert set(cifar) == set(SEED_VARIANTS)
    assert cifar["cnn"]["test_accuracy"] == pytest.approx(0.6656)
    assert published("imagefolder:/data/cifar10") == cifar
    assert published("synthetic") == {}


def test_reproduce_table(capsys) -> None:
    summaries = [
        {"variant": v, "train_accuracy": 0.5, "test_accuracy": 0.4, "test_macro_f1": 0.3,
         "params": 1000 + i, "train_seconds": 2.0, "epochs": 1, "precision": "fp32"}
        for i, v in enumerate(SEED_VARIANTS)
    ]  # fmt: skip
    print_reproduce_table(
        summaries, published("cifar10"), "cifar10", {"train": 300, "test": 100}, True
    )
    out = capsys.readouterr().out
    for v in SEED_VARIANTS:
        assert v in out
    assert "0.6656" in out  # the seed's cnn accuracy beside ours
    assert "-0.2656" in out  # 0.4 - 0.6656
    assert "test-time dropout" in out
    assert fmt(None) == "–" and fmt(0.123456) == "0.1235"


# --- real data ------------------------------------------------------------------------------------


def _small_cifar_folder(dest: Path, train_per_class: int, test_per_class: int) -> Path:
    rng = random.Random(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for cls_dir in sorted((SHARED_CIFAR10 / split).iterdir()):
            if not cls_dir.is_dir():
                continue
            files = sorted(cls_dir.iterdir())
            target = dest / split / cls_dir.name
            target.mkdir(parents=True)
            for f in rng.sample(files, n):
                shutil.copy(f, target / f.name)
    return dest


@pytest.mark.slow
def test_reproduce_on_real_cifar10_sample(tmp_path: Path, capsys) -> None:
    if not (SHARED_CIFAR10 / "train").is_dir() or not (SHARED_CIFAR10 / "test").is_dir():
        pytest.skip(f"real CIFAR-10 not available at {SHARED_CIFAR10} (../shared is optional)")
    root = _small_cifar_folder(tmp_path / "cifar10", train_per_class=30, test_per_class=20)
    argv = ["reproduce", "--dataset", "imagefolder", "--data-dir", str(root), "--epochs", "1",
            "--limit-train", "300", "--limit-test", "200", "--cache-dir", str(tmp_path / "cache"),
            "--device", "cpu", "--json"]  # fmt: skip
    code = run_cli(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    summaries = json.loads(out)
    assert [s["variant"] for s in summaries] == list(SEED_VARIANTS)
    for s in summaries:
        check_summary(s, s["variant"], "imagefolder")
    assert summaries[0]["params"] == SEED_CNN_PARAMS
    assert list((tmp_path / "cache").glob("imagefolder-*.pt")), "decoded tensors were not cached"

    from lstmbench.config import DataConfig
    from lstmbench.data import load

    data = load(DataConfig(dataset="imagefolder", data_dir=str(root), val_fraction=0.0))
    assert data.classes == tuple(sorted(p.name for p in (SHARED_CIFAR10 / "train").iterdir()))
    assert data.num_classes == 10
    assert data.sizes() == {"train": 300, "val": 0, "test": 200}
    assert data.train_x.shape[1:] == (3, 32, 32)
    assert data.train_x.float().std() > 20  # real pictures, not blank
