"""The Optuna study of a `hparams_search` sweep, as the sweeper, each trial and the report open it.

- Storage: `hydra.sweeper.storage` is null (an SQLite file `optuna.db` in the sweep directory), an SQLAlchemy
  URL (`sqlite:///…`, `postgresql://user@host/db`, `mysql+pymysql://…`) or `journal:<path>`, an Optuna journal
  file (`journal:///shared/fs/study.log`: absolute; `journal:study.log`: relative to the working directory),
  the storage Optuna recommends on a shared file system that SQLite's locking does not trust (NFS).
- Pruners: `hydra.sweeper.pruner` names one of PRUNERS, built with `hydra.sweeper.pruner_args` as keyword
  arguments. Only these names are accepted: a name read from a config or a storage never picks an arbitrary class.
- Trials are reached by study name + storage URL + trial number, so that a trial running in another process or
  on another machine (submitit) reports to the same study the sweeper tells.

Optuna is imported inside the functions: Hydra imports the sweeper's module at every start-up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_FILE = "optuna.db"
JOURNAL = "journal:"
# hydra.sweeper.pruner → the class in optuna.pruners (successive_halving is ASHA, Li et al. 2020)
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}
DIRECTIONS = ("maximize", "minimize")


def format_value(value: Any) -> str:
    """A drawn value as Hydra's override grammar reads it back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)  # ints; strings are already escaped for the grammar (the space's Transformer.encode)


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The URL every process opens: null → the SQLite file in the sweep dir; file paths made absolute, so that
    trials started elsewhere (another working directory, a submitit job) find the same file."""
    if storage is None:
        return "sqlite:///" + str((Path(sweep_dir) / DEFAULT_FILE).absolute())
    storage = str(storage)
    if storage.startswith(JOURNAL):
        return JOURNAL + "//" + str(journal_path(storage).absolute())
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        relative = storage[len("sqlite:///"):]
        if relative and relative != ":memory:":
            return "sqlite:///" + str(Path(relative).absolute())
    return storage


def journal_path(url: str) -> Path:
    path = url[len(JOURNAL):]
    return Path(path[2:] if path.startswith("//") else path).expanduser()


def url_problem(url: str) -> str | None:
    """Why hydra.sweeper.storage cannot name a storage, or None."""
    if url.startswith(JOURNAL):
        return None if str(journal_path(url)) not in ("", ".") else "journal: needs a file, e.g. journal:///shared/study.log"
    if url.startswith("redis"):
        return "Redis storages are not supported; use an RDB URL or journal:<file>"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError as e:
        return f"not a database URL ({e}); e.g. sqlite:///study.db, postgresql://user@host/db or journal:<file>"
    return None


def shown(url: str) -> str:
    """The URL with its password masked, for logs and summary.md."""
    if url.startswith(JOURNAL):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str):
    import optuna

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # several workers on one file: wait up to a minute for SQLite's write lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def build_pruner(name: str, args: dict | None = None):
    import optuna

    if name not in PRUNERS:
        raise ValueError(f"hydra.sweeper.pruner={name!r} is not one of {list(PRUNERS)}")
    return getattr(optuna.pruners, PRUNERS[name])(**dict(args or {}))


def load_study(study_name: str, url: str, pruner=None):
    import optuna

    return optuna.load_study(study_name=study_name, storage=open_storage(url), pruner=pruner)


def open_trial(study_name: str, url: str, number: int, pruner=None):
    """The running trial `number` of the study, as an optuna.trial.Trial (report, should_prune)."""
    import optuna

    storage = open_storage(url)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))
