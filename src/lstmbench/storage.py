"""Storage URLs, opening Optuna storages robustly, and creating or checking a study.

URL precedence: ``--storage``, then ``$LSTMBENCH_STORAGE``, then the study file's ``storage``, then
the embedded default ``sqlite:///lstmbench.db``. Supported:

* ``sqlite:///path.db`` — one machine, a few workers;
* ``postgresql+psycopg://user:pw@host/db`` and ``mysql+pymysql://user:pw@host/db`` — many
  machines; heartbeats let a killed worker's trial be failed and retried by the others;
* ``journal:PATH`` — Optuna's journal file, for many processes on one machine without a server;
* ``grpc://host:port`` — Optuna's gRPC proxy (``lstmbench storage-proxy``) in front of an RDB.

RDB connections are pre-pinged, and every storage call is retried with exponential back-off on a
connection error, so a database restart mid-study is survived rather than fatal. Passwords never
reach output or logs: print :func:`mask_url` instead of a URL.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from lstmbench import __version__
from lstmbench.config import ConfigError

__all__ = [
    "DEFAULT_STORAGE",
    "StorageError",
    "StudyCounts",
    "count_trials",
    "ensure_study",
    "is_connection_error",
    "load_existing_study",
    "mask_url",
    "open_storage",
    "resolve_url",
]

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///lstmbench.db"
SPEC_ATTR = "lstmbench:spec"
HASH_ATTR = "lstmbench:search_hash"
VERSION_ATTR = "lstmbench:version"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


class StorageError(ConfigError):
    """A storage that cannot be used: bad URL, unreachable server, missing driver, wrong study."""


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    if "://" not in url or "@" not in url:
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def artifact_dir(cli: str | None = None) -> Path:
    """Where plots are stored as study artifacts: flag, ``$LSTMBENCH_ARTIFACTS``, or
    ``./lstmbench-artifacts`` (the dashboard reads the same place)."""
    return Path(cli or os.environ.get("LSTMBENCH_ARTIFACTS") or "lstmbench-artifacts")


def resolve_url(cli: str | None, study_file: str | None) -> str:
    """Apply the precedence: flag, environment, study file, embedded default."""
    return cli or os.environ.get("LSTMBENCH_STORAGE") or study_file or DEFAULT_STORAGE


# --- retries --------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])

# Storage calls that are safe to repeat after a lost connection. Creating a trial is not: a retry
# after a commit whose acknowledgement was lost could create a second one.
_NOT_RETRIED = {"create_new_trial", "create_new_study"}


def is_connection_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retrying(method: F, name: str, attempts: int, first_delay: float) -> F:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        delay = first_delay
        for attempt in range(1, attempts + 1):
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if attempt == attempts or not is_connection_error(exc):
                    raise
                log.warning(
                    "storage %s failed (%s); retry %d/%d in %.1fs",
                    name,
                    exc.__class__.__name__,
                    attempt,
                    attempts - 1,
                    delay,
                )
                time.sleep(delay * (0.5 + random.random()))  # jitter spreads reconnecting workers
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    return call  # type: ignore[return-value]


def _add_retries(storage: RDBStorage, attempts: int = 8, first_delay: float = 0.5) -> None:
    """Wrap the storage interface's methods, on the instance, with connection-error retries.

    Wrapping the instance (not a proxy object) keeps it an ``RDBStorage``, so Optuna still sees
    its heartbeat support. 8 attempts with back-off ride out about half a minute of downtime.
    """
    interface = {n for cls in (BaseStorage, BaseHeartbeat) for n in vars(cls) if n[0] != "_"}
    for name in sorted((interface | {"_get_stale_trial_ids"}) - _NOT_RETRIED):
        method = getattr(storage, name, None)
        if callable(method):
            setattr(storage, name, _retrying(method, name, attempts, first_delay))


# --- opening --------------------------------------------------------------------------------------


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def open_storage(
    url: str,
    heartbeat_interval: int | None = None,
    max_retries: int = 2,
    must_exist: bool = False,
) -> BaseStorage:
    """An Optuna storage for ``url``. With ``heartbeat_interval`` (RDB only), trials whose
    worker stops beating for twice that long are failed and re-queued up to ``max_retries``.
    ``must_exist`` refuses to create a new SQLite or journal file (for read-only commands)."""
    scheme = _scheme(url)
    masked = mask_url(url)
    if scheme == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.split(":", 1)[1].removeprefix("//")).expanduser()
        if must_exist and not path.is_file():
            raise StorageError(f"journal storage {masked}: no such file; check --storage")
        if not path.parent.is_dir():
            raise StorageError(f"journal storage {masked}: directory {path.parent} does not exist")
        return JournalStorage(JournalFileBackend(str(path)))
    if scheme == "grpc":
        from optuna.storages import GrpcStorageProxy

        hostport = url.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise StorageError(f"storage {masked}: expected grpc://HOST:PORT")
        return GrpcStorageProxy(host=host, port=int(port))
    if scheme not in RDB_SCHEMES:
        raise StorageError(
            f"unsupported storage URL {masked}; use sqlite:///FILE.db, postgresql+psycopg://..., "
            "mysql+pymysql://..., journal:FILE or grpc://HOST:PORT"
        )
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:" and not Path(path).expanduser().parent.is_dir():
            raise StorageError(f"storage {masked}: directory {Path(path).parent} does not exist")
        if must_exist and path != ":memory:" and not Path(path).expanduser().is_file():
            raise StorageError(f"storage {masked}: no such database file; check --storage")
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if scheme == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 60}  # wait out other workers' write locks
    else:
        engine_kwargs.update(pool_recycle=300, pool_size=2, max_overflow=4)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        with warnings.catch_warnings():  # heartbeats are stable in practice; keep stderr clean
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        kwargs = dict(
            heartbeat_interval=heartbeat_interval,
            grace_period=2 * heartbeat_interval,
            heartbeat_stale_trial_callback=callback,
        )
    try:
        storage = _create_rdb_storage(url, engine_kwargs, kwargs)
    except ModuleNotFoundError as exc:
        extra = "postgres" if scheme.startswith("postgres") else "mysql"
        raise StorageError(
            f"storage {masked}: database driver {exc.name!r} is not installed; "
            f"pip install 'lstmbench[{extra}]'"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        root = exc.__cause__ or exc
        detail = str(getattr(root, "orig", root)).strip().splitlines()[0][:200]
        raise StorageError(f"cannot open storage {masked}: {mask_url(detail)}") from None
    _add_retries(storage)
    return storage


def _create_rdb_storage(
    url: str, engine_kwargs: dict[str, Any], kwargs: dict[str, Any], attempts: int = 4
) -> RDBStorage:
    """``RDBStorage(url)``, tried again on a lost connection or a lost schema-creation race.

    Workers that start together on a fresh database all create its tables at once, and one of
    them loses (an ``IntegrityError`` on PostgreSQL's catalogue, "table exists" on MySQL); a
    second try finds the tables made. A server restarting while a worker starts is ridden out
    the same way. A server that is simply not there still fails within a few seconds.
    """
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except (sqlalchemy.exc.IntegrityError, optuna.exceptions.StorageInternalError) as exc:
            error: Exception = exc
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if not is_connection_error(exc):
                raise
            error = exc
        if attempt == attempts:
            raise error
        # info, not warning: a user's typo must still end in one line on stderr
        log.info("opening storage failed (%s); retry %d/%d", error.__class__.__name__, attempt,
                 attempts - 1)  # fmt: skip
        time.sleep(delay * (0.5 + random.random()))
        delay *= 2
    raise AssertionError("unreachable")


# --- studies --------------------------------------------------------------------------------------


def ensure_study(spec: Any, storage: BaseStorage, url: str) -> optuna.Study:
    """Create ``spec``'s study if it does not exist, else check it has the same search space.

    Idempotent. On first creation the study records the resolved study file, its hash and the
    package version, and enqueues the file's fixed trials (exactly once, even if several workers
    race to create it: only the one whose insert wins does this).
    """
    from lstmbench.space import make_pruner, make_sampler

    sampler, pruner = make_sampler(spec), make_pruner(spec)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner
        )
        check_same_search(study, spec, url)
        return study
    study.set_user_attr(SPEC_ATTR, spec.resolved)
    study.set_user_attr(HASH_ATTR, spec.search_hash())
    study.set_user_attr(VERSION_ATTR, __version__)
    with warnings.catch_warnings():  # experimental only in name; the dashboard shows it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([spec.metric])
    for params in spec.enqueue:
        study.enqueue_trial(params)
    log.info("created study %r in %s", spec.name, mask_url(url))
    return study


def check_same_search(study: optuna.Study, spec: Any, url: str) -> None:
    stored_hash = study.user_attrs.get(HASH_ATTR)
    if stored_hash is None:
        # Created by workers that had not yet written the attributes (a race), or not by us.
        for _ in range(20):
            time.sleep(0.25)
            stored_hash = optuna.load_study(
                study_name=spec.name, storage=study._storage
            ).user_attrs.get(HASH_ATTR)
            if stored_hash is not None:
                break
    if stored_hash is None:
        raise StorageError(
            f"study {spec.name!r} in {mask_url(url)} was not created by lstmbench; "
            "choose another [study] name"
        )
    if stored_hash != spec.search_hash():
        stored = study.user_attrs.get(SPEC_ATTR, {})
        diff = _first_difference(stored, spec.resolved)
        raise StorageError(
            f"study {spec.name!r} in {mask_url(url)} exists with a different search "
            f"({diff} differs from {spec.path}); use a new [study] name or the original file"
        )


def _first_difference(stored: dict[str, Any], current: dict[str, Any]) -> str:
    for section in ("data", "objective", "search", "enqueue", "budget"):
        a, b = stored.get(section), current.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    return f"[{section}] {key}"
        elif a != b:
            return f"[{section}]"
    return "the search"


def load_existing_study(name: str, storage: BaseStorage, url: str) -> optuna.Study:
    """Load a study that must already exist."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        hint = f"; studies there: {', '.join(names)}" if names else "; the storage has no studies"
        raise StorageError(f"no study named {name!r} in {mask_url(url)}{hint}") from None


@dataclass(frozen=True)
class StudyCounts:
    complete: int
    pruned: int
    running: int
    waiting: int
    failed: int
    best: float | None = None  # the best completed value so far (single-objective studies)

    @property
    def finished(self) -> int:
        """Trials that count towards the target: completed or pruned (not failed)."""
        return self.complete + self.pruned


def count_trials(study: optuna.Study) -> StudyCounts:
    """Trial counts by state and the best value, from one read of the study's trials."""
    trials = study.get_trials(deepcopy=False)
    by_state = {state: 0 for state in TrialState}
    for t in trials:
        by_state[t.state] += 1
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = None
    if values and len(study.directions) == 1:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best = max(values) if maximize else min(values)
    return StudyCounts(
        complete=by_state[TrialState.COMPLETE],
        pruned=by_state[TrialState.PRUNED],
        running=by_state[TrialState.RUNNING],
        waiting=by_state[TrialState.WAITING],
        failed=by_state[TrialState.FAIL],
        best=best,
    )


@dataclass(frozen=True)
class VariantSummary:
    variant: str
    counts: dict[str, int]  # state name → trials
    best_value: float | None
    best_trial: int | None


def summarize_by_variant(study: optuna.Study) -> list[VariantSummary]:
    """Trial counts by state and the best value, per variant (in first-seen order)."""
    rows: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False):
        variant = str(t.params.get("variant") or t.user_attrs.get("variant") or "?")
        row = rows.setdefault(variant, {"counts": {}, "best": None, "trial": None})
        row["counts"][t.state.name] = row["counts"].get(t.state.name, 0) + 1
        if (
            t.state == TrialState.COMPLETE
            and t.value is not None
            and (row["best"] is None or t.value > row["best"])
        ):
            row["best"], row["trial"] = t.value, t.number
    return [VariantSummary(v, r["counts"], r["best"], r["trial"]) for v, r in rows.items()]


def serve_grpc_proxy(url: str, host: str, port: int) -> None:
    """Run Optuna's gRPC proxy for the RDB at ``url`` until interrupted.

    Workers then use ``grpc://HOST:PORT`` and hold no database connection of their own, which is
    what lets hundreds of them share one database. The price: heartbeats need a direct RDB
    connection, so trials of workers killed behind the proxy are not failed and retried
    automatically.
    """
    if _scheme(url) not in RDB_SCHEMES:
        raise StorageError(f"the storage proxy serves an RDB URL, got {mask_url(url)}")
    try:
        from optuna.storages import run_grpc_proxy_server
    except ImportError:  # pragma: no cover
        raise StorageError("the gRPC proxy needs grpcio; pip install 'lstmbench[grpc]'") from None
    storage = open_storage(url)
    log.warning("gRPC storage proxy for %s on %s:%d", mask_url(url), host, port)
    try:
        run_grpc_proxy_server(storage, host=host, port=port)
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"the gRPC proxy needs {exc.name!r}; pip install 'lstmbench[grpc]'"
        ) from None
