"""The ``lstmbench`` command: parses arguments and wires library calls, nothing more.

Every user mistake surfaces as a :class:`~lstmbench.config.ConfigError` (or an argparse error) and
becomes one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lstmbench import __version__
from lstmbench.config import (
    DATASETS,
    LAYOUTS,
    LEARNED_INITS,
    PRECISIONS,
    READOUTS,
    ConfigError,
    DataConfig,
    EmbeddingConfig,
    ModelConfig,
    TrainConfig,
)

log = logging.getLogger("lstmbench")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _variants() -> list[str]:
    from lstmbench.models import variant_names

    return variant_names()


# --- shared argument groups -----------------------------------------------------------------------


def _add_data_args(p: argparse.ArgumentParser, default_dataset: str = "synthetic") -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=default_dataset,
        metavar="D",
        help=f"one of: {', '.join(DATASETS)} (default: {default_dataset})",
    )
    g.add_argument("--data-dir", metavar="P", help="where the images are (imagefolder: required)")
    g.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download cifar10/caltech101/flowers102",
    )
    g.add_argument(
        "--cache-dir",
        metavar="P",
        help="decoded-tensor cache (default: $LSTMBENCH_CACHE_DIR or ~/.cache/lstmbench)",
    )
    g.add_argument("--image-size", type=int, default=32, metavar="S")
    g.add_argument("--limit-train", type=int, metavar="N", help="stratified subset of train")
    g.add_argument("--limit-test", type=int, metavar="N", help="stratified subset of test")
    g.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int, default=0, help="weights, order and augmentation seed")
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument("-v", "--verbose", action="count", default=0)


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY.toml", help="a study file (see studies/)")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL (default: $LSTMBENCH_STORAGE, the file's, sqlite:///lstmbench.db)",
    )
    p.add_argument(
        "--data-dir",
        metavar="P",
        help="read the study's images from P on this machine (overrides the file)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0)


def _data_config(args: argparse.Namespace, **overrides: Any) -> DataConfig:
    fields = dict(
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        cache_dir=args.cache_dir,
        image_size=args.image_size,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
    )
    fields.update(overrides)
    return DataConfig(**fields)


# --- commands -------------------------------------------------------------------------------------


@contextmanager
def _progress(
    total: int | None, description: str, enabled: bool = True
) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr; yields ``advance(n=1, note="")``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda n=1, note="": None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total, note="")
        yield lambda n=1, note="": bar.update(task, advance=n, note=note)


def cmd_train(args: argparse.Namespace) -> int:
    from lstmbench.data import load
    from lstmbench.train import train

    config = TrainConfig(
        model=ModelConfig(
            variant=args.variant,
            layout=args.layout,
            hidden_size=args.hidden_size,
            layers=args.layers,
            bidirectional=args.bidirectional,
            dropout=args.dropout,
            readout=args.readout,
            embedding=EmbeddingConfig(
                pos_lo=args.pos_range[0],
                pos_hi=args.pos_range[1],
                channel_values=tuple(args.channel_values),
                sin_base=args.sin_base,
                sin_scale=args.sin_scale,
                learned_init=args.learned_init,
            ),
            seed_eval_dropout=args.seed_eval_dropout,
        ),
        data=_data_config(args, val_fraction=args.val_fraction),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        augment=not args.no_augment,
        normalize=args.normalize,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
    )
    data = load(config.data)
    with _progress(config.epochs, f"{args.variant}", enabled=not args.json) as advance:
        result = train(config, data, on_epoch=lambda e, m: advance(note=f"loss {m.train_loss:.3f}"))
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    from lstmbench.report import print_train_summary

    print_train_summary(summary, data.sizes())
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from lstmbench.data import load
    from lstmbench.seed import published, seed_configs
    from lstmbench.train import train

    # The seed had no validation split: it trained on every training image.
    data_cfg = _data_config(args, val_fraction=0.0)
    configs = seed_configs(
        data_cfg,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        keep_seed_bugs=not args.fix_seed_bugs,
        precision=args.precision,
    )
    data = load(data_cfg)
    summaries = []
    with _progress(len(configs) * args.epochs, "reproduce", enabled=not args.json) as advance:
        for config in configs:
            name = config.model.variant
            result = train(
                config,
                data,
                evaluate_train=True,
                on_epoch=lambda e, m, name=name: advance(note=f"{name} epoch {e}"),
            )
            summaries.append(result.summary())
            log.info("%s: test accuracy %.4f", name, result.test.accuracy if result.test else 0)
    if args.json:
        print(json.dumps(summaries))
        return 0
    from lstmbench.report import print_reproduce_table

    print_reproduce_table(
        summaries,
        published(data.name),
        data.name,
        data.sizes(),
        keep_seed_bugs=not args.fix_seed_bugs,
    )
    return 0


def _study_and_storage(args: argparse.Namespace) -> tuple[Any, str]:
    """The validated study file and the resolved storage URL (nothing opened yet)."""
    from lstmbench.space import load_study_file, with_data_dir
    from lstmbench.storage import resolve_url

    spec = with_data_dir(load_study_file(args.study), getattr(args, "data_dir", None))
    return spec, resolve_url(args.storage, spec.storage)


def cmd_study_create(args: argparse.Namespace) -> int:
    from lstmbench.storage import count_trials, ensure_study, mask_url, open_storage

    spec, url = _study_and_storage(args)
    study = ensure_study(spec, open_storage(url), url)
    counts = count_trials(study)
    print(
        f"study {spec.name!r} ready in {mask_url(url)} · target {spec.target_trials} trials · "
        f"{counts.finished} finished, {counts.waiting} queued · search {spec.search_hash()}"
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import os

    from lstmbench.worker import WorkerOptions, run_worker

    spec, url = _study_and_storage(args)
    index = args.worker_index
    if index is None and os.environ.get("LSTMBENCH_WORKER_INDEX", "").isdigit():
        index = int(os.environ["LSTMBENCH_WORKER_INDEX"])
    options = WorkerOptions(
        device=args.device,
        max_trials=args.max_trials,
        heartbeat_interval=args.heartbeat_interval,
        worker_index=index,
    )
    report = run_worker(spec, url, options)
    print(
        f"worker finished: {report.ran} trial(s)"
        + (" (interrupted)" if report.interrupted else ""),
        file=sys.stderr,
    )
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lstmbench.launch import launch, parse_devices

    spec, url = _study_and_storage(args)
    devices = parse_devices(args.devices)
    code = launch(
        spec,
        args.study,
        url,
        args.workers,
        devices,
        heartbeat_interval=args.heartbeat_interval,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )
    if code == 0 and not args.quiet:
        _print_status(spec.name, url)
    return code


def _print_status(name: str, url: str) -> None:
    from lstmbench.report import print_status
    from lstmbench.storage import load_existing_study, open_storage, summarize_by_variant

    study = load_existing_study(name, open_storage(url, must_exist=True), url)
    print_status(study, summarize_by_variant(study), url)


def cmd_status(args: argparse.Namespace) -> int:
    spec, url = _study_and_storage(args)
    _print_status(spec.name, url)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lstmbench.export import FORMATS, print_leaderboard, publish_to_study, write_exports
    from lstmbench.leaderboard import build_leaderboard
    from lstmbench.storage import (
        artifact_dir,
        check_same_search,
        load_existing_study,
        open_storage,
    )

    spec, url = _study_and_storage(args)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(
            f"unknown format {unknown[0] if unknown else '(none)'!r} in "
            f"--formats; choose from: {','.join(FORMATS)}"
        )
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    study = load_existing_study(spec.name, open_storage(url, must_exist=True), url)
    check_same_search(study, spec, url)  # the file must describe the study it scores
    out = Path(args.out or Path("leaderboard") / spec.name)
    with _progress(None, "re-evaluating", enabled=True) as advance:
        board = build_leaderboard(
            study,
            spec,
            seeds=args.seeds,
            retrain=not args.no_retrain,
            device=args.device,
            jobs=args.jobs,
            on_run=lambda note: advance(note=note),
        )
    written = write_exports(board, study, out, formats)
    publish_to_study(study, board, written.get("png", []), artifact_dir(args.artifacts))
    print_leaderboard(board)
    for fmt_name, paths in written.items():
        print(f"{fmt_name:>4}: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from lstmbench.dashboard import serve
    from lstmbench.storage import artifact_dir, resolve_url

    serve(resolve_url(args.storage, None), args.host, args.port, artifact_dir(args.artifacts))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lstmbench.demo import run_demo

    return run_demo(
        storage=args.storage, workers=args.workers, seeds=args.seeds, out=args.out, fresh=args.fresh
    )


def cmd_storage_proxy(args: argparse.Namespace) -> int:
    from lstmbench.storage import serve_grpc_proxy

    serve_grpc_proxy(args.storage, args.host, args.port)
    return 0


# --- parser ---------------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(prog="lstmbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lstmbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train one variant and evaluate it on the test split")
    p.add_argument(
        "--variant", required=True, metavar="V", help=f"one of: {', '.join(_variants())}"
    )
    p.add_argument("--layout", default="rows", metavar="L", help=f"one of: {', '.join(LAYOUTS)}")
    p.add_argument("--hidden-size", type=int, default=512, metavar="N")
    p.add_argument("--layers", type=int, default=1, metavar="N")
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0, help="between LSTM layers")
    p.add_argument("--readout", default="last", metavar="R", help=f"one of: {', '.join(READOUTS)}")
    p.add_argument("--pos-range", type=float, nargs=2, default=(1.0, 2.0), metavar=("LO", "HI"))
    p.add_argument(
        "--channel-values", type=float, nargs=3, default=(2.0, 2.5, 3.0), metavar=("R", "G", "B")
    )
    p.add_argument("--sin-base", type=float, default=10000.0)
    p.add_argument("--sin-scale", type=float, default=1.0)
    p.add_argument(
        "--learned-init",
        default="fixed",
        metavar="I",
        help=f"learned embeddings start from: {', '.join(LEARNED_INITS)}",
    )
    p.add_argument(
        "--seed-eval-dropout",
        action="store_true",
        help="cnn: keep the seed's bug of dropout at test time",
    )
    p.add_argument("--epochs", type=int, default=10, metavar="N")
    p.add_argument("--batch-size", type=int, default=128, metavar="N")
    p.add_argument("--lr", type=float, default=1e-3, metavar="F")
    p.add_argument("--weight-decay", type=float, default=0.0, metavar="F")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F")
    p.add_argument("--normalize", action="store_true", help="standardise inputs (the seed: off)")
    p.add_argument("--no-augment", action="store_true", help="turn the seed's augmentation off")
    p.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="auto: bf16 autocast where the hardware has it (CUDA, AVX512-BF16/AMX CPUs)",
    )  # fmt: skip
    _add_data_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reproduce", help="run the seed study's seven configurations exactly")
    p.add_argument("--epochs", type=int, default=10, metavar="N")
    p.add_argument(
        "--fix-seed-bugs",
        action="store_true",
        help="turn off the CNN's test-time dropout (a bug in the seed)",
    )
    p.add_argument(
        "--precision", default="fp32", choices=PRECISIONS,
        help="fp32 as the seed ran (default); auto for the faster bf16 path where available",
    )  # fmt: skip
    _add_data_args(p, default_dataset="cifar10")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("study", help="manage studies")
    study_sub = p.add_subparsers(dest="study_command", required=True, parser_class=Parser)
    p = study_sub.add_parser("create", help="create a study from a study file (idempotent)")
    _add_study_args(p)
    p.set_defaults(func=cmd_study_create)

    p = sub.add_parser("worker", help="run trials of a study until it reaches its target")
    _add_study_args(p)
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu or cuda:N")
    p.add_argument("--max-trials", type=int, metavar="N", help="stop after N trials of this worker")
    p.add_argument(
        "--heartbeat-interval",
        type=int,
        metavar="S",
        help="seconds between heartbeats (RDB storages; default: the study file's)",
    )
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("launch", help="start N workers on this machine, with live progress")
    _add_study_args(p)
    p.add_argument("--workers", type=int, default=2, metavar="N")
    p.add_argument("--devices", default="cpu", metavar="LIST", help="cpu or cuda:0,cuda:1,...")
    p.add_argument("--heartbeat-interval", type=int, metavar="S")
    p.add_argument("--log-dir", metavar="DIR", help="worker logs (default lstmbench-logs/STUDY)")
    p.add_argument("--quiet", action="store_true", help="no status table at the end")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("status", help="trial counts by state and variant, and the best so far")
    _add_study_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("leaderboard", help="best of each variant vs the CNN, with seeds and CIs")
    _add_study_args(p)
    p.add_argument("--seeds", type=int, default=3, metavar="K", help="re-training seeds (3)")
    p.add_argument("--out", metavar="DIR", help="export directory (default leaderboard/STUDY)")
    p.add_argument("--formats", default="csv,json,md,html,png", metavar="LIST")
    p.add_argument("--no-retrain", action="store_true", help="use cached re-evaluations only")
    p.add_argument("--device", default="auto", metavar="DEV")
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="parallel re-training processes"
    )
    p.add_argument(
        "--artifacts", metavar="DIR", help="artifact store (default lstmbench-artifacts)"
    )
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("dashboard", help="serve optuna-dashboard on the study storage")
    p.add_argument(
        "--storage", metavar="URL", help="default: $LSTMBENCH_STORAGE or sqlite:///lstmbench.db"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--artifacts", metavar="DIR", help="artifact store (default lstmbench-artifacts)"
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("demo", help="the whole product in ~2 minutes, offline: search, leaderboard")
    p.add_argument(
        "--storage", metavar="URL", help="default: $LSTMBENCH_STORAGE or sqlite:///lstmbench.db"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", metavar="DIR", help="export directory (default leaderboard/demo)")
    p.add_argument(
        "--fresh", action="store_true", help="delete the demo study first and start over"
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("storage-proxy", help="Optuna's gRPC storage proxy in front of an RDB")
    p.add_argument("--storage", required=True, metavar="URL", help="the RDB the proxy serves")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=13000)
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=cmd_storage_proxy)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0))
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        command = " ".join(filter(None, (args.command, getattr(args, "study_command", None))))
        print(f"lstmbench {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstmbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `lstmbench ... --json | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
