"""What the command modules share: reading inputs with the column flags, the checks made before any work,
the progress bars and the run's warning summary, loading a model. Public names, for the package's own
modules (recmaml.cli.*); nothing outside recmaml.cli imports them."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

from recmaml.errors import RecMamlError
from recmaml.progress import progress_bar

log = logging.getLogger("recmaml")


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that every cleanup (temporary outputs, partition folders)
    runs as for Ctrl-C; Python's default would end the process without it."""


def with_training_threads(config, args):
    """The config with --threads as meta.threads, when given (the config's, 'auto' by default, else)."""
    return config if args.threads is None else config.replace(meta={"threads": args.threads})


MODEL_COLUMNS = ("recommend", "predict", "evaluate")  # their --*-col default to the model's (load_model)
DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}


def resolve_columns(args, rec=None) -> None:
    """Fill the --*-col flags left out: the names the model was fitted with (saved in its metadata), else
    the defaults. A flag given always wins; a model saved before the names were recorded has none."""
    remembered = (getattr(rec, "columns", None) or {}) if rec is not None else {}
    for role, default in DEFAULT_COLUMNS.items():
        flag = f"{role}_col"
        if getattr(args, flag, None) is None:
            name = remembered[role] if role in remembered else default
            setattr(args, flag, "" if name is None else name)  # '' : the model was fitted without this column


def read_log(path, args, *, format=None, table=None, ratings=True):
    """An interaction log with the command's column flags; ratings=False for tables of (user, item) rows
    such as candidates, which carry no rating or timestamp."""
    from recmaml.connectors import read_interactions

    return read_interactions(path, format=format or args.format, user_col=args.user_col, item_col=args.item_col,
                             rating_col=(args.rating_col or None) if ratings else None,
                             timestamp_col=(args.timestamp_col or None) if ratings else None,
                             table=table or args.data_table, encoding=args.encoding, delimiter=args.delimiter,
                             decimal=args.decimal)


def read_user_features(args):
    from recmaml.connectors import read_side_features

    return read_side_features(args.user_features, id_col=args.user_col) if args.user_features else None


def with_features(log_, user_features=None, item_features=None, what="the log"):
    """The log with side-feature tables attached; a table that names none of the log's ids is an error
    (usually ids of another type or column), one that covers few of them a warning."""
    from dataclasses import replace

    import numpy as np

    for table, ids, kind in ((user_features, log_.users, "user"), (item_features, log_.items, "item")):
        if table is None:
            continue
        covered = float(np.mean(table.ids.index(ids.ids) != -1))
        if covered == 0:
            raise RecMamlError(f"the {kind} feature table names none of the {len(ids)} {kind} ids of {what}; check "
                               f"that its id column holds the same ids (e.g. {ids.ids[:3].tolist()})")
        if covered < 0.5:
            log.warning("warning: the %s feature table covers only %.0f%% of the %s ids of %s; the others count as "
                        "missing", kind, 100 * covered, kind, what)
    if user_features is None and item_features is None:
        return log_
    return replace(log_, user_features=user_features or log_.user_features,
                   item_features=item_features or log_.item_features)


def check_table(args) -> None:
    for flag in ("table", "data_table", "candidates_table", "pairs_table"):
        if getattr(args, flag, None) == "":
            raise RecMamlError(f"--{flag.replace('_', '-')} '': give a table name, or leave the flag out")


def check_sizes(args) -> None:
    check_table(args)
    for flag in ("k", "batch_size", "chunk_rows", "buckets"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise RecMamlError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def progress(args, **kwargs):
    return progress_bar(disable=args.quiet, **kwargs)


class LazyBar:
    """A tqdm bar that opens at its first update, so that an error before any progress (a missing file)
    prints its one line alone, and work done before (reading, baselines) does not sit under an idle bar."""

    def __init__(self, args, **kwargs):
        if isinstance(kwargs.get("total"), str):  # meta.epochs = 'auto': fit's first epoch tells the count
            kwargs["total"] = None
        self.args, self.kwargs, self.bar = args, kwargs, None

    def _opened(self):
        if self.bar is None:
            self.bar = progress(self.args, **self.kwargs)
        return self.bar

    def update(self, n: int = 1) -> None:
        self._opened().update(n)

    def set_total(self, total: int) -> None:
        bar = self._opened()
        bar.total = total
        bar.refresh()

    def __call__(self, epoch: int, record: dict) -> None:
        """MetaRecommender.fit's progress callback: the meta-loss and the validation figure by name."""
        from recmaml.build import epoch_progress

        if self.bar is None and epoch > 1:  # a resumed fit: its first epoch here follows the checkpoint's,
            self.kwargs["initial"] = epoch - 1  # which count in the position but not in the rate
        epoch_progress(self._opened())(epoch, record)

    def finished(self, what: str, history) -> None:
        """One set of weights stopped (fit calls this after each, recmaml.build.trained_scorer): its bar
        closes where it stopped and why is logged now, before the next set (model.sample_weights) opens
        its own bar."""
        self.stopped(history.stopped)
        if self.bar is not None:
            self.bar.close()
        self.bar, self.kwargs = None, {**self.kwargs, "desc": "sample weights", "initial": 0}
        log.info("%s %s", what, history.summary())

    def stopped(self, why: str) -> None:
        """Close the bar where training stopped, saying why (TrainHistory.stopped): stopped short of its
        total by early stopping or the time budget, a bar left at 96/300 reads as a crash."""
        if self.bar is None or why == "epochs" or self.bar.n >= (self.bar.total or 0):
            return
        what = self.kwargs.get("desc", "meta-training")
        self.bar.set_description(f"{what} stopped ({why}) at epoch {self.bar.n} of {self.bar.total}")
        self.bar.total = self.bar.n
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


class UserTotal:
    """The scoring bar's total: the history's users, known only once streamed, estimated from the rows
    (users per row so far x the source's rows) and exact after the last chunk."""

    def __init__(self):
        self.total_rows = self.seen_rows = self.seen_users = 0

    def rows(self, n: int) -> None:
        self.total_rows = n

    def chunk(self, rows: int, users: int) -> int:
        self.seen_rows += rows
        self.seen_users += users
        if self.seen_rows >= self.total_rows:
            return self.seen_users
        return round(self.seen_users / self.seen_rows * self.total_rows)


class RunWarnings:
    """Collects the warnings that repeat per chunk or call (UnknownItemsWarning per input, history or
    candidates; DuplicateInteractionsWarning) into one summary line each for the whole run:

        run_warnings = RunWarnings()
        with run_warnings.collecting():
            rec.recommend(...)
        run_warnings.report()
    """

    def __init__(self):
        self.rows: dict[str, int] = {}
        self.ids: dict[str, set] = {}
        self.duplicates = 0
        self.duplicate_chunks = 0
        self.at_ignored = 0  # users whose timestamps --at gave way to (ArrivalWarning.ignored), over all chunks
        self.time_units: set[str] = set()  # the units a TimestampUnitWarning was shown for (once each)

    @contextlib.contextmanager
    def collecting(self):
        from recmaml.cold import ArrivalWarning, UnknownItemsWarning
        from recmaml.frames import DuplicateInteractionsWarning
        from recmaml.times import TimestampUnitWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            if issubclass(w.category, (UnknownItemsWarning, DuplicateInteractionsWarning)):
                self.add(w.message)
            elif issubclass(w.category, ArrivalWarning) and w.message.ignored:
                self.at_ignored += w.message.ignored
            elif issubclass(w.category, TimestampUnitWarning) and w.message.unit in self.time_units:
                continue  # every chunk of a history says it again
            else:
                if issubclass(w.category, TimestampUnitWarning):
                    self.time_units.add(w.message.unit)
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def add(self, message) -> None:
        """Count one UnknownItemsWarning or DuplicateInteractionsWarning (caught here, or sent back by a
        Spark worker)."""
        from recmaml.cold import UnknownItemsWarning

        if isinstance(message, UnknownItemsWarning):
            self.rows[message.what] = self.rows.get(message.what, 0) + message.rows
            self.ids.setdefault(message.what, set()).update(message.item_ids.tolist())
        else:
            self.duplicates += message.rows
            self.duplicate_chunks += 1

    def report(self) -> None:
        if self.duplicates:
            log.warning("warning: dropped %d duplicated (user, item) history rows in all (%d chunk%s); kept the "
                        "latest row of each pair", self.duplicates, self.duplicate_chunks,
                        "" if self.duplicate_chunks == 1 else "s")
        for what, rows in self.rows.items():
            log.warning("warning: dropped %d %s rows naming %d items the model does not know", rows, what,
                        len(self.ids[what]))
        if self.at_ignored:
            from recmaml.cold import at_ignored_message

            log.warning("warning: %s", at_ignored_message(self.at_ignored))


def check_file(path, flag: str) -> None:
    """Fail before any work when an output FILE (evaluate's JSON) cannot be written: a folder has its name,
    or its folder is missing or read-only. An existing file is replaced."""
    path = Path(path)
    if path.is_dir():
        raise RecMamlError(f"{flag} {path}: is a folder; name the JSON file to write, e.g. {path / 'metrics.json'}")
    if not path.parent.is_dir():
        raise RecMamlError(f"{flag} {path}: folder {str(path.parent)!r} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise RecMamlError(f"{flag} {path}: not writable; choose another folder")


def check_folder(path, flag: str) -> None:
    """Fail before any work when an output FOLDER (a model, the quickstart's) cannot be made: its parent is
    missing or read-only, or a file has its name."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RecMamlError(f"{flag} {path}: a file has this name, and {flag} names a folder to write; remove the "
                           "file or choose another name")
    if not path.parent.is_dir():
        raise RecMamlError(f"{flag} {path}: folder {str(path.parent)!r} does not exist; create it first")
    if not os.access(path if path.is_dir() else path.parent, os.W_OK):
        raise RecMamlError(f"{flag} {path}: not writable; choose another folder")


def checked_device(args) -> str:
    """--device checked before any work: an absent device is one line naming the flag."""
    from recmaml.config import device_problem

    problem = device_problem(args.device)
    if problem:
        raise RecMamlError(f"--device {args.device}: {problem}")
    return args.device


def load_model(args):
    from recmaml import MetaRecommender

    rec = MetaRecommender.load(args.model, device=checked_device(args) if args.device else "cpu")
    threads = getattr(args, "threads", None)
    if threads is not None:
        rec.config = rec.config.replace(serve={"threads": threads})
    resolve_columns(args, rec)
    return rec.with_history_kind(getattr(args, "history_kind", None)).arriving_at(getattr(args, "at", None))
