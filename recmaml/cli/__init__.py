"""Command line: `recmaml SUBCOMMAND ...`. Each subcommand parses its flags and calls library functions;
this module and recmaml.quickstart are the only places that print or show progress bars.

Exit codes: 0 success; 2 usage, config or data errors (one line, no traceback); 1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shlex
import sys
import warnings
from pathlib import Path

from recmaml import __version__
from recmaml.errors import RecMamlError, cli_surface, cut
from recmaml.progress import progress_bar

log = logging.getLogger("recmaml")


# ---- shared flags and helpers ------------------------------------------------------------------------


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input columns (of every input file) and the log's format")
    group.add_argument("--format", help="format of --data / --history / --heldout: csv, tsv, parquet, jsonl, sql, "
                       "movielens-100k, movielens-1m, movielens-latest, filmtrust, ciaodvd; inferred from the extension or folder by default")
    group.add_argument("--user-col", default=None, help=f"user id column (default: user_id{_REMEMBERED})")
    group.add_argument("--item-col", default=None, help=f"item id column (default: item_id{_REMEMBERED})")
    group.add_argument("--rating-col", default=None, help="rating column (default: rating, optional; "
                       f"{_REMEMBERED[2:]}); '' reads implicit feedback")
    group.add_argument("--timestamp-col", default=None,
                       help=f"timestamp column (default: timestamp, optional{_REMEMBERED})")
    group.add_argument("--decimal", choices=[".", ","], default=".", help="decimal mark of the ratings (default "
                       "'.'; ',' reads the 3,5 of a European spreadsheet as 3.5)")
    group.add_argument("--data-table", help="table to read when --data / --history / --heldout is an SQL URI")
    group.add_argument("--delimiter", default=None, help="field separator of CSV/TSV inputs (default: detected "
                       "from the header line: comma, semicolon, tab or pipe)")
    group.add_argument("--encoding", default="utf8", help="text encoding of CSV/TSV/JSON Lines inputs (default utf8; "
                       "e.g. latin-1, or utf8-lossy to replace undecodable bytes)")


def _threads_arg(text: str) -> int | str:
    """--threads: a whole number >= 1, or 'auto' (the cores no other process is running on)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number >= 1 or 'auto'")
    return value


def _with_training_threads(config, args):
    """The config with --threads as meta.threads, when given (the config's, 'auto' by default, else)."""
    return config if args.threads is None else config.replace(meta={"threads": args.threads})


def _add_training_threads(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--threads", type=_threads_arg, default=None,
                        help="torch threads while meta-training, a number or 'auto': the cores no other process "
                        "is running on when training starts (default: the config's meta.threads, 'auto' unless "
                        "set); fewer threads than cores can be much faster beside another CPU-bound job." + more)


_REMEMBERED = "; with --model: the name the model was fitted with"
_MODEL_COLUMNS = ("recommend", "predict", "evaluate")  # their --*-col default to the model's (_load_model)
_DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}


def _resolve_columns(args, rec=None) -> None:
    """Fill the --*-col flags left out: the names the model was fitted with (saved in its metadata), else
    the defaults. A flag given always wins; a model saved before the names were recorded has none."""
    remembered = (getattr(rec, "columns", None) or {}) if rec is not None else {}
    for role, default in _DEFAULT_COLUMNS.items():
        flag = f"{role}_col"
        if getattr(args, flag, None) is None:
            name = remembered[role] if role in remembered else default
            setattr(args, flag, "" if name is None else name)  # '' : the model was fitted without this column


def _add_common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # accepted before and after the command; SUPPRESS keeps a subcommand from resetting the top-level flag
    parser.add_argument("--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="no progress bars or notes, only errors")


def _read(path, args, *, format=None, table=None, ratings=True):
    """An interaction log with the command's column flags; ratings=False for tables of (user, item) rows
    such as candidates, which carry no rating or timestamp."""
    from recmaml.connectors import read_interactions

    return read_interactions(path, format=format or args.format, user_col=args.user_col, item_col=args.item_col,
                             rating_col=(args.rating_col or None) if ratings else None,
                             timestamp_col=(args.timestamp_col or None) if ratings else None,
                             table=table or args.data_table, encoding=args.encoding, delimiter=args.delimiter,
                             decimal=args.decimal)


def _user_features(args):
    from recmaml.connectors import read_side_features

    return read_side_features(args.user_features, id_col=args.user_col) if args.user_features else None


def _with_features(log_, user_features=None, item_features=None, what="the log"):
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


def _check_table(args) -> None:
    for flag in ("table", "data_table", "candidates_table", "pairs_table"):
        if getattr(args, flag, None) == "":
            raise RecMamlError(f"--{flag.replace('_', '-')} '': give a table name, or leave the flag out")


def _check_sizes(args) -> None:
    _check_table(args)
    for flag in ("k", "batch_size", "chunk_rows", "buckets"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise RecMamlError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def _progress(args, **kwargs):
    return progress_bar(disable=args.quiet, **kwargs)


class _LazyBar:
    """A tqdm bar that opens at its first update, so that an error before any progress (a missing file)
    prints its one line alone, and work done before (reading, baselines) does not sit under an idle bar."""

    def __init__(self, args, **kwargs):
        if isinstance(kwargs.get("total"), str):  # meta.epochs = 'auto': fit's first epoch tells the count
            kwargs["total"] = None
        self.args, self.kwargs, self.bar = args, kwargs, None

    def _opened(self):
        if self.bar is None:
            self.bar = _progress(self.args, **self.kwargs)
        return self.bar

    def update(self, n: int = 1) -> None:
        self._opened().update(n)

    def set_total(self, total: int) -> None:
        bar = self._opened()
        bar.total = total
        bar.refresh()

    def epoch(self, epoch: int, record: dict) -> None:
        """MetaRecommender.fit's progress callback: the meta-loss and the validation figure by name."""
        from recmaml.recommender import epoch_progress

        if self.bar is not None and epoch <= self.bar.n - self.kwargs.get("initial", 0) and epoch == 1:
            # the next set of weights starts (model.sample_weights): the first bar ends where it stopped
            self.bar.set_description(f"{self.kwargs.get('desc', 'meta-training')} ended at epoch {self.bar.n}")
            self.bar.total = self.bar.n
            self.bar.close()
            self.bar, self.kwargs = None, {**self.kwargs, "desc": "sample weights", "initial": 0}
        if self.bar is None and epoch > 1:  # a resumed fit: its first epoch here follows the checkpoint's,
            self.kwargs["initial"] = epoch - 1  # which count in the position but not in the rate
        epoch_progress(self._opened())(epoch, record)

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


class _UserTotal:
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


class _RunWarnings:
    """Collects the warnings that repeat per chunk or call (UnknownItemsWarning per input, history or
    candidates; DuplicateInteractionsWarning) into one summary line each for the whole run:

        run_warnings = _RunWarnings()
        with run_warnings.collecting():
            rec.recommend(...)
        run_warnings.report()
    """

    def __init__(self):
        self.rows: dict[str, int] = {}
        self.ids: dict[str, set] = {}
        self.duplicates = 0
        self.duplicate_chunks = 0

    @contextlib.contextmanager
    def collecting(self):
        from recmaml.frames import DuplicateInteractionsWarning
        from recmaml.recommender import UnknownItemsWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            if issubclass(w.category, (UnknownItemsWarning, DuplicateInteractionsWarning)):
                self.add(w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def add(self, message) -> None:
        """Count one UnknownItemsWarning or DuplicateInteractionsWarning (caught here, or sent back by a
        Spark worker)."""
        from recmaml.recommender import UnknownItemsWarning

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


def _check_file(path, flag: str) -> None:
    """Fail before any work when an output FILE (evaluate's JSON) cannot be written: a folder has its name,
    or its folder is missing or read-only. An existing file is replaced."""
    path = Path(path)
    if path.is_dir():
        raise RecMamlError(f"{flag} {path}: is a folder; name the JSON file to write, e.g. {path / 'metrics.json'}")
    if not path.parent.is_dir():
        raise RecMamlError(f"{flag} {path}: folder {str(path.parent)!r} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise RecMamlError(f"{flag} {path}: not writable; choose another folder")


def _check_folder(path, flag: str) -> None:
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


# ---- subcommands --------------------------------------------------------------------------------------


def _device(args) -> str:
    """--device checked before any work: an absent device is one line naming the flag."""
    from recmaml.config import device_problem

    problem = device_problem(args.device)
    if problem:
        raise RecMamlError(f"--device {args.device}: {problem}")
    return args.device


def _load_model(args):
    from recmaml import MetaRecommender

    rec = MetaRecommender.load(args.model, device=_device(args) if args.device else "cpu")
    threads = getattr(args, "threads", None)
    if threads is not None:
        rec.config = rec.config.replace(serve={"threads": threads})
    _resolve_columns(args, rec)
    return rec.with_history_kind(getattr(args, "history_kind", None)).arriving_at(getattr(args, "at", None))


def cmd_fit(args) -> None:
    from recmaml.connectors import read_side_features
    from recmaml import MetaRecommender, distributed, load_config, resume

    if args.nproc is not None and args.nproc < 1:
        raise RecMamlError(f"--nproc must be at least 1, got {args.nproc}")
    cores = os.cpu_count() or 1
    if args.nproc and args.nproc > cores and not distributed.launched():
        log.warning("warning: --nproc %d starts more processes than this machine's %d cores; the ranks share the "
                    "cores, which adds contention and no speed (--nproc %d at most; on CPUs one process is often "
                    "the fastest, see --help)", args.nproc, cores, cores)
    if args.nproc and args.nproc > 1 and not distributed.launched():
        _fit_on_ranks(args)
        return
    rank = int(os.environ.get("RANK", "0")) if distributed.launched() else 0
    if rank != 0:  # one voice: rank 0 reports, shows progress and saves
        args.quiet = True
        logging.getLogger("recmaml").setLevel(logging.ERROR)
    config = _with_training_threads(load_config(args.config), args)
    if args.device:
        config = config.replace(meta={"device": _device(args)})
    _check_folder(args.out, "--out")
    item_features = read_side_features(args.item_features, id_col=args.item_col) if args.item_features else None
    warm = _with_features(_read(args.data, args), _user_features(args), item_features, what="--data")
    log.info("warm log: %d interactions, %d users, %d items", len(warm), warm.n_users, warm.n_items)
    if not args.resume and rank == 0 and resume.exists(args.out):
        log.info("note: %s holds the checkpoint of an unfinished fit; starting over (--resume continues it)", args.out)
    try:
        with _LazyBar(args, total=config.meta.epochs, unit="epoch", desc="meta-training") as bar:
            rec = MetaRecommender(config).fit(warm, progress=bar.epoch, checkpoint_dir=args.out, resume=args.resume)
            bar.stopped((rec.sample_history or rec.history).stopped)  # the last bar is the last weights'
    except (KeyboardInterrupt, _Terminated):
        if rank == 0 and resume.exists(args.out):
            log.info("the last epoch's checkpoint is kept in %s: rerun with --resume to continue", args.out)
        raise
    log.info("meta-training %s", rec.history.summary())
    if rec.priors is not None:
        from recmaml.calibrate import describe

        log.info("serving priors: %s", describe(rec.priors))
    rec.columns = {"user": args.user_col, "item": args.item_col, "rating": args.rating_col or None,
                   "timestamp": args.timestamp_col or None}  # the defaults of recommend, predict and evaluate
    if rank == 0:
        rec.save(args.out)
        resume.discard(args.out)  # only once the model is saved: a kill before leaves a resumable fit
        log.info("saved the model to %s", args.out)


def _fit_on_ranks(args) -> None:
    """`recmaml fit --nproc N`: the same command on N processes started by torchrun (one node, gloo on
    CPUs, nccl on GPUs), each adapting 1/N of every meta-batch; rank 0 saves the model."""
    import subprocess

    argv, skip = [], False
    for token in args.argv:  # the command line without --nproc
        if skip:
            skip = False
            continue
        if token == "--nproc":
            skip = True
            continue
        if not token.startswith("--nproc="):
            argv.append(token)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "recmaml", *argv]
    log.info("meta-training on %d processes: %s", args.nproc, shlex.join(command))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))}
    done = subprocess.run(command, env=env)
    if done.returncode != 0:
        raise RecMamlError(f"meta-training on {args.nproc} processes failed (exit {done.returncode}); "
                           "each rank's error is printed above")


def cmd_recommend(args) -> None:
    import time

    from recmaml.connectors import RankedListsWriter, check_output, iter_user_chunks
    from recmaml.serve import ServeSummary, StageTimes, serve_chunks

    _check_sizes(args)
    check_output(args.out)
    rec = _load_model(args)
    user_features = _user_features(args)
    candidates = None
    if args.candidates:
        candidates = _read(args.candidates, args, format=args.candidates_format, table=args.candidates_table,
                           ratings=False)
    run_warnings = _RunWarnings()
    total = _UserTotal()
    chunks = iter_user_chunks(args.history, chunk_rows=args.chunk_rows, format=args.format, user_col=args.user_col,
                              item_col=args.item_col, rating_col=args.rating_col or None,
                              timestamp_col=args.timestamp_col or None, table=args.data_table, on_rows=total.rows,
                              encoding=args.encoding, delimiter=args.delimiter, decimal=args.decimal)
    if user_features:
        chunks = (_with_features(chunk, user_features, what="--history") for chunk in chunks)
    times = StageTimes() if args.timings else None
    summary = ServeSummary()
    start = time.perf_counter()
    with (run_warnings.collecting(), RankedListsWriter(args.out, table=args.table) as out,
          _LazyBar(args, unit="users", desc="scoring") as bar):
        served = serve_chunks(rec, chunks, out.write, k=args.k, exclude_seen=not args.include_seen,
                              candidates=candidates, batch_size=args.batch_size, progress=bar.update, times=times,
                              on_chunk=lambda chunk, users: bar.set_total(total.chunk(len(chunk), len(users))),
                              allow_unknown_items=args.allow_unknown_items, summary=summary)
    run_warnings.report()
    log.info("wrote %d ranked rows to %s (%s)", out.rows, args.out, _served(summary))
    if times is not None:
        from recmaml.files import write_json

        write_json(args.timings, {"users": served, "rows": out.rows, "seconds": time.perf_counter() - start,
                                  "stages": times.seconds, "torch_threads": times.threads})


def _served(summary) -> str:
    """The summary line's account of the users: how many, and those whose lists come from the start alone
    or who got none."""
    parts = [f"{summary.users:,} users"]
    if summary.items.users_only_unknown:
        parts.append(f"{summary.items.users_only_unknown:,} named only items the model does not know and were "
                     "ranked from the meta-learned start")
    if summary.no_candidates:
        parts.append(f"{summary.no_candidates:,} had no candidate rows and got no list")
    return "; ".join(parts)


def cmd_spark_recommend(args) -> None:
    from recmaml import spark as recmaml_spark

    _check_sizes(args)
    # before Spark starts: the JVM takes seconds and prints its own lines before an error would show
    recmaml_spark.check_job(args.model, args.history, args.out, history_format=args.format,
                            candidates=args.candidates, candidates_format=args.candidates_format,
                            out_format=args.out_format)
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise RecMamlError(f"spark-recommend needs pyspark ({err}); install the extra: pip install 'recmaml[spark]'")

    ours = SparkSession.getActiveSession() is None  # stop only a session this command started
    spark = recmaml_spark.session(args.master, quiet=args.quiet)
    try:
        histories = recmaml_spark.read_table(spark, args.history, args.format)
        candidates = None
        if args.candidates:
            candidates = recmaml_spark.read_table(spark, args.candidates, args.candidates_format, "--candidates")
        dropped = recmaml_spark.dropped_rows(spark)
        ranked = recmaml_spark.recommend(histories, args.model, k=args.k, candidates=candidates,
                                         user_col=args.user_col, item_col=args.item_col,
                                         rating_col=args.rating_col or None, exclude_seen=not args.include_seen,
                                         buckets=args.buckets, batch_size=args.batch_size, dropped=dropped)
        recmaml_spark.write_table(ranked, args.out, args.out_format)
        run_warnings = _RunWarnings()  # the workers' warnings, one summary line each as `recommend` gives
        for message in dropped.value:
            run_warnings.add(message)
        run_warnings.report()
        log.info("wrote the ranked lists to %s", args.out)
    finally:
        if ours:
            spark.stop()


def cmd_predict(args) -> None:
    import polars as pl

    from recmaml.connectors import check_output, read_pairs, write_frame

    _check_sizes(args)
    check_output(args.out)
    rec = _load_model(args)
    history = _read(args.history, args)
    if args.user_features:
        history = _with_features(history, _user_features(args), what="--history")
    user_ids, item_ids = read_pairs(args.pairs, user_col=args.user_col, item_col=args.item_col,
                                    format=args.pairs_format, table=args.pairs_table)
    run_warnings = _RunWarnings()
    with run_warnings.collecting():
        pred = rec.predict(history, user_ids, item_ids, batch_size=args.batch_size,
                           allow_unknown_items=args.allow_unknown_items)
    run_warnings.report()
    out = pl.DataFrame({"user_id": user_ids, "item_id": item_ids, "prediction": pred})
    n_unknown = int(out["prediction"].is_nan().sum())
    if n_unknown:
        log.warning("warning: %d pairs name items the model does not know; their prediction is NaN", n_unknown)
    write_frame(out, args.out, table=args.table or "predictions")
    log.info("wrote %d predictions to %s", out.height, args.out)
    if rec.config.model.objective != "rating":  # documented: a ranking model predicts scores, not ratings
        log.info("note: %s is a ranking model (objective %r): its predictions are relevance scores that order "
                 "items, not ratings; a model fitted with objective = \"rating\" predicts ratings", args.model,
                 rec.config.model.objective)


def cmd_evaluate(args) -> None:
    from recmaml.protocol import evaluate_recommender

    _check_sizes(args)
    if args.out:
        _check_file(args.out, "--out")
    rec = _load_model(args)
    history, heldout = _read(args.history, args), _read(args.heldout, args)
    if args.user_features:
        history = _with_features(history, _user_features(args), what="--history")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise RecMamlError(f"--threshold {args.threshold}: give a rating (e.g. 4), or -1 to count every held-out row")
    threshold = _relevance_threshold(args.threshold, history, heldout)
    run_warnings = _RunWarnings()
    with run_warnings.collecting():
        metrics = evaluate_recommender(rec, history, heldout, k=args.k, relevance_threshold=threshold,
                                       allow_unknown_items=args.allow_unknown_items)
    run_warnings.report()
    for name, value in metrics.items():
        print(f"{name:<14}{value:.4f}" if isinstance(value, float) else f"{name:<14}{value}")
    if args.out:
        from recmaml.files import write_json

        write_json(args.out, metrics)


def _relevance_threshold(flag, history, heldout) -> float | None:
    """--threshold, or by default the relevant rating of the log's own scale (recmaml.data.relevant_rating
    of the history and held-out ratings together), as fit and benchmark derive it; None: every row counts."""
    import numpy as np

    from recmaml.data import relevant_rating

    if flag is not None:
        return None if flag < 0 else flag
    ratings = [log_.rating for log_ in (history, heldout) if log_.rating is not None]
    threshold = relevant_rating(np.concatenate(ratings)) if ratings else None
    if threshold is None:
        log.info("relevant: every held-out row (the log has no rating scale; --threshold sets one)")
    else:
        log.info("relevant: held-out ratings of at least %g, from the log's scale (--threshold sets another)", threshold)
    return threshold


def cmd_quickstart(args) -> None:
    from recmaml import quickstart

    device = _device(args) if args.device else None
    if Path(args.out).exists() and not Path(args.out).is_dir():  # found now, not after the training
        raise RecMamlError(f"--out {args.out}: a file has this name, and --out names the folder the quickstart "
                           "writes; remove the file or choose another name")
    data = quickstart.find_data(args.data, allow_download=not args.no_download)
    config, source = quickstart.default_config()
    config = _with_training_threads(config, args)
    if device:
        config = config.replace(meta={"device": device})
    config = (config, source)
    with _LazyBar(args, total=config[0].meta.epochs, unit="epoch", desc="meta-training") as bar:
        summary = quickstart.run(Path(args.out), data, config=config, seed=args.seed, progress=bar.epoch)
        bar.stopped(summary["results"]["recmaml"]["stopped"])
    log.info("meta-training %s", summary["results"]["recmaml"]["training"])
    print(quickstart.format_table(summary))
    print(f"model: {summary['model']}\nranked lists of {summary['cold_users']} cold users: {summary['ranked']}")
    from recmaml.files import write_json

    write_json(Path(args.out) / "metrics.json", summary)


def _csv_list(text: str, flag: str, cast=str) -> tuple:
    try:
        return tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise RecMamlError(f"{flag} {text!r}: expected comma-separated values ({err})") from err


def cmd_benchmark(args) -> None:
    from recmaml import benchmark, report
    from recmaml.config import load_config

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RecMamlError(f"--out {out}: exists and is not a folder; pass a folder for the benchmark's cells")
    try:  # checked first: the plots come at the end of what can be hours of work
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise RecMamlError("the benchmark's plots need matplotlib: pip install 'recmaml[bench]'") from err
    if isinstance(args.threads, int):  # every system's torch threads; 'auto' is each recmaml fit's own choice
        import torch

        torch.set_num_threads(args.threads)  # torch's threads spin when the machine is busy: fewer can be faster
    if not args.report_only:
        if not args.data:
            raise RecMamlError("--data is required (or pass --report-only to rebuild the report of --out)")
        log_ = _read(args.data, args)
        protocols = _csv_list(args.protocol, "--protocol") if args.protocol else tuple(
            p for p in benchmark.PROTOCOLS if (p != "temporal" or log_.timestamp is not None)
            and (p != "melu" or log_.rating is not None))
        if not args.protocol and log_.timestamp is None:
            log.info("note: the log has no timestamps; the temporal protocol is left out")
        if not args.protocol and log_.rating is None:
            log.info("note: the log has no ratings; the MeLU protocol and the item-mean baselines are left out")
        spec = benchmark.BenchmarkSpec(
            name=args.name or Path(args.data.rstrip("/")).stem, protocols=protocols,
            ks=_csv_list(args.support_sizes, "--support-sizes", int), seeds=_csv_list(args.seeds, "--seeds", int),
            systems=benchmark.resolve_systems(args.systems), relevant_min=args.relevant_min,
            cold_fraction=args.cold_fraction, budget_seconds=args.budget_seconds, grid=args.grid,
            config=_with_training_threads(load_config(args.config), args),
            command="recmaml " + shlex.join(args.argv))
        cells = len(spec.protocols) * len(spec.seeds) * len(spec.systems)
        with progress_bar(total=cells, unit="cell", desc=spec.name, disable=args.quiet) as bar:
            benchmark.run_benchmark(log_, spec, out, progress=bar)
    summary = report.write_report(out, page=args.page)
    if not summary:
        raise RecMamlError(f"--out {out}: holds no finished benchmark cells to report")
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'plots'}")
    for data, by_protocol in summary.items():
        for protocol, block in by_protocol.items():
            for k, comp in block["comparison"].items():
                for metric, c in comp.items():
                    print(f"{data} {protocol} K={k} {metric}: {c['recmaml']} {c['recmaml_mean']:.4f} vs "
                          f"{c['baseline']} {c['baseline_mean']:.4f} (ratio {c['ratio']:.3f}, paired "
                          f"{c['paired']['mean']:+.4f} ± {c['paired']['half']:.4f})")


def cmd_tune(args) -> None:
    from recmaml import tune
    from recmaml.config import load_config
    from recmaml.connectors.writers import write_frame

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RecMamlError(f"--out {out}: exists and is not a folder; pass a folder for the leaderboard and best.toml")
    if args.protocol not in ("random", "temporal"):
        raise RecMamlError(f"--protocol {args.protocol}: tune on 'random' or 'temporal' supports")
    space = tune.load_space(args.space)
    base = _with_training_threads(load_config(args.config), args)
    log_ = _read(args.data, args)
    if args.protocol == "temporal" and log_.timestamp is None:
        raise RecMamlError("--protocol temporal needs timestamps (--timestamp-col); this log has none")
    budgets = tune.rung_budgets(args.budget_minutes * 60.0, args.trials, 3, 2.0)
    total = tune.planned_fits(args.trials, len(budgets), 3)
    log.info("%d trials over %d fields; successive halving in %d rungs of %s s of meta-training each", args.trials,
             len(space), len(budgets), "/".join(f"{b:.0f}" for b in budgets))
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar(total=total, unit="fit", desc="tuning", disable=args.quiet) as bar:
        result = tune.tune(log_, space, trials=args.trials, budget_minutes=args.budget_minutes, base=base,
                           protocol=args.protocol, k=args.support_size, seed=args.seed, progress=bar)
    import polars as pl

    rows = tune.leaderboard_rows(result.trials)
    board = pl.DataFrame([{k: (str(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows])
    write_frame(board, out / "leaderboard.csv")
    header = (f"written by: recmaml {shlex.join(args.argv)}\nvalidation nDCG@20 {result.best.score:.4f} at K={args.support_size} "
              f"({args.protocol} supports), trial {result.best.number} of {args.trials}")
    from recmaml.files import atomic_write

    text = tune.config_toml(result.best_config, header=header)
    atomic_write(out / "best.toml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(tune.leaderboard_table(result.trials, base))
    print(f"best: validation nDCG@20 {result.best.score:.4f}; config written to {out / 'best.toml'} "
          f"(recmaml fit --config {out / 'best.toml'}); leaderboard {out / 'leaderboard.csv'}; {result.seconds:.0f} s")


# ---- parser -------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the flag and the problem, then where the usage is (argparse's
    own error prints the whole usage first, which buries the line that matters in a batch job's log)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


_HISTORY_KIND_HELP = ("what the users' rows are: 'first' (their earliest interactions, as a new user shows them) "
                      "or 'sample' (a random sample of them); default: the model's serve.history_kind, 'first' "
                      "for a model fitted on a log with timestamps")


_AT_HELP = ("when the users arrive, for those whose history has no timestamp (e.g. no rows at all): Unix seconds or "
            "an ISO date such as 2024-03-01; it picks what was popular then (default: the end of the warm log)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recmaml", description="Meta-learned cold-start recommendation: adapt to each new user's few "
        "interactions, then rank.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `recmaml COMMAND --help` for a command's flags and an example")
    parser.add_argument("--version", action="version", version=f"recmaml {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, help, example, uses_model=True, device=True):
        p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p)
        if uses_model:
            p.add_argument("--model", required=True, help="model directory written by `recmaml fit`")
        if device:
            p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the config's "
                           "meta.device when training, cpu when serving)")
        if uses_model and device:
            p.add_argument("--threads", type=_threads_arg, default=None, help="torch threads while scoring, a "
                           "number or 'auto': the cores no other process is running on (default: the model's "
                           "serve.threads, 'auto' unless set)")
        return p

    fit = command("fit", "meta-train a model on a log of warm users",
                  "recmaml fit --config ml-100k --data ../shared/data/movielens/ml-100k --out runs/ml100k",
                  uses_model=False)
    fit.add_argument("--config", help="TOML config: a path, or a shipped config by name (ml-100k, ml-100k-temporal, ml-100k-rating, ml-1m, ml-latest-small, tiny); defaults in code when omitted")
    fit.add_argument("--data", required=True, help="interaction log of warm users (file, folder, SQL URI)")
    fit.add_argument("--out", required=True, help="model directory to write")
    fit.add_argument("--user-features", help="table of user side features keyed by --user-col")
    fit.add_argument("--item-features", help="table of item side features keyed by --item-col "
                     "(text: categorical; 'a|b': multi-hot; numbers: numeric)")
    fit.add_argument("--nproc", type=int, default=None, help="meta-train on N processes of this machine "
                     "(torch.distributed via torchrun: gloo on CPUs, nccl on GPUs); each adapts 1/N of every "
                     "meta-batch and the ranks' gradients are summed, so it trains the same model as one process "
                     "up to rounding (the weights differ slightly, by up to 0.018 in a measured fit). It pays on several "
                     "GPUs or many idle cores with large meta-batches; on a few CPU cores one process is faster "
                     "(2 processes on 2 cores: 1.44 x slower than one), since torch already uses every core. N "
                     "above the cores only adds contention (a warning says so)")
    fit.add_argument("--resume", action="store_true",
                     help="continue a killed or interrupted fit from the checkpoint it wrote after its last "
                     "finished epoch in --out, to the weights an uninterrupted run ends with (same config and "
                     "data, else exit 2); starts from the first epoch when there is none. Without --resume an "
                     "existing checkpoint is ignored and overwritten. meta.max_seconds counts the training time "
                     "recorded in the checkpoint")
    _add_training_threads(fit)
    _add_data_flags(fit)
    fit.set_defaults(func=cmd_fit)

    rec = command("recommend", "adapt to cold users' histories and write their top-k ranked lists",
                  "recmaml recommend --model runs/ml100k --history new_users.parquet --k 20 --out recs.parquet")
    rec.add_argument("--history", required=True, help="the cold users' interactions (need not be sorted by user)")
    rec.add_argument("--k", type=int, default=20, help="list length (default 20)")
    rec.add_argument("--out", required=True, help="output: .csv, .tsv, .parquet, .jsonl, or an SQL URI with --table")
    rec.add_argument("--table", default=None, help="SQL table for an SQL --out (default ranked_lists)")
    rec.add_argument("--candidates", help="user_id,item_id rows: rank only these items for each user (a user "
                     "with candidates and no history is ranked from the meta-learned start)")
    rec.add_argument("--candidates-format", help="format of --candidates when its extension does not say")
    rec.add_argument("--candidates-table", help="table to read when --candidates is an SQL URI")
    rec.add_argument("--include-seen", action="store_true", help="allow items of a user's history in its list")
    rec.add_argument("--history-kind", choices=["first", "sample"], default=None, help=_HISTORY_KIND_HELP)
    rec.add_argument("--at", default=None, help=_AT_HELP)
    rec.add_argument("--batch-size", type=int, default=None, help="cold users adapted together (default 4096)")
    rec.add_argument("--chunk-rows", type=int, default=2_000_000,
                     help="history rows held in memory at once (default 2,000,000); larger histories are "
                          "split by user in one streaming pass")
    rec.add_argument("--user-features", help="table of the cold users' side features keyed by --user-col")
    rec.add_argument("--timings", help="also write where the time went (read, map, adapt, top-k, lists, write) "
                     "to this JSON file")
    rec.add_argument("--allow-unknown-items", action="store_true", help="accept a history whose rows (all or most) "
                     "name items the model does not know (otherwise an error, or a warning when most do)")
    _add_data_flags(rec)
    rec.set_defaults(func=cmd_recommend)

    srec = command("spark-recommend", "the same ranked lists as `recommend`, computed by Spark (extra: spark)",
                   "recmaml spark-recommend --model runs/ml100k --history new_users.parquet --out ranked.parquet "
                   "--master local[2]", device=False)
    srec.add_argument("--history", required=True, help="Parquet or CSV file or folder of the cold users' rows")
    srec.add_argument("--out", required=True, help="folder of Parquet or CSV parts (by its extension or --out-format)")
    srec.add_argument("--out-format", choices=["parquet", "csv"], help="format of --out when its name does not say")
    srec.add_argument("--k", type=int, default=20, help="list length (default 20)")
    srec.add_argument("--master", default=None, help="Spark master, e.g. local[2] (default: spark-submit's, else "
                      "Spark's own default)")
    srec.add_argument("--candidates", help="Parquet or CSV of user_id,item_id rows: rank only these items")
    srec.add_argument("--candidates-format", choices=["parquet", "csv"], help="format of --candidates")
    srec.add_argument("--include-seen", action="store_true", help="allow items of a user's history in its list")
    srec.add_argument("--buckets", type=int, default=None, help="ranges of user ids users are split into (default: 4 per "
                      "Spark slot)")
    srec.add_argument("--batch-size", type=int, default=None, help="cold users adapted together in a worker")
    _add_data_flags(srec)
    srec.set_defaults(func=cmd_spark_recommend)

    pred = command("predict", "adapt to users' histories and predict the score of given (user, item) pairs",
                   "recmaml predict --model runs/ml100k-rating --history new_users.csv --pairs pairs.csv --out pred.csv")
    pred.add_argument("--history", required=True, help="the users' interactions")
    pred.add_argument("--pairs", required=True, help="user_id,item_id rows to predict")
    pred.add_argument("--pairs-format", help="format of --pairs when its extension does not say")
    pred.add_argument("--pairs-table", help="table to read when --pairs is an SQL URI")
    pred.add_argument("--out", required=True, help="output with columns user_id, item_id, prediction")
    pred.add_argument("--table", default=None, help="SQL table for an SQL --out (default predictions)")
    pred.add_argument("--batch-size", type=int, default=None, help="users adapted together (default 4096)")
    pred.add_argument("--history-kind", choices=["first", "sample"], default=None, help=_HISTORY_KIND_HELP)
    pred.add_argument("--user-features", help="table of the users' side features keyed by --user-col")
    pred.add_argument("--allow-unknown-items", action="store_true", help="accept a history whose rows (all or most) "
                     "name items the model does not know (otherwise an error, or a warning when most do)")
    _add_data_flags(pred)
    pred.set_defaults(func=cmd_predict)

    ev = command("evaluate", "metrics of a model on held-out interactions of users it adapts to",
                 "recmaml evaluate --model runs/ml100k --history cold_support.csv --heldout cold_query.csv")
    ev.add_argument("--history", required=True, help="what each evaluated user reveals (adapted on)")
    ev.add_argument("--heldout", required=True, help="the same users' hidden interactions")
    ev.add_argument("--k", type=int, default=20, help="cut-off of the ranking metrics (default 20)")
    ev.add_argument("--history-kind", choices=["first", "sample"], default=None, help=_HISTORY_KIND_HELP)
    ev.add_argument("--threshold", type=float, default=None,
                    help="held-out ratings at least this are relevant (default: from the log's scale, as fit and "
                    "benchmark derive it: 4 on 1-5, 3.5 on 0.5-4; -1: every held-out row)")
    ev.add_argument("--out", help="also write the metrics to this JSON file")
    ev.add_argument("--user-features", help="table of the users' side features keyed by --user-col")
    ev.add_argument("--allow-unknown-items", action="store_true", help="accept a history whose rows (all or most) "
                     "name items the model does not know (otherwise an error, or a warning when most do)")
    _add_data_flags(ev)
    ev.set_defaults(func=cmd_evaluate)

    from recmaml.benchmark import DEFAULT_KS, SYSTEMS

    tn = command("tune", "search config fields (random search, successive halving) on validation users",
                 "recmaml tune --data ../shared/data/movielens/ml-100k --space default --trials 24 "
                 "--budget-minutes 20 --out runs/tune", uses_model=False, device=False)
    tn.add_argument("--data", required=True, help="interaction log of warm users (file, folder, SQL URI)")
    tn.add_argument("--space", default="default", help="search space TOML (lists of values or { low, high, log, int } "
                    "ranges per config field), or 'default' for the shipped one")
    tn.add_argument("--trials", type=int, default=24, help="random configurations drawn (default 24)")
    tn.add_argument("--budget-minutes", type=float, default=20.0, help="meta-training time of all trials together")
    tn.add_argument("--out", required=True, help="folder for leaderboard.csv and best.toml")
    tn.add_argument("--config", help="the config the space's fields override (path or shipped name)")
    tn.add_argument("--protocol", default="random", help="random (default) or temporal supports of the validation users")
    tn.add_argument("--support-size", "--k", dest="support_size", type=int, default=5,
                    help="support size the validation users reveal (default 5; --k: its former spelling)")
    tn.add_argument("--seed", type=int, default=0, help="the split seed: tuning never sees the test users of "
                    "`recmaml benchmark --seeds` with this seed")
    _add_training_threads(tn)
    _add_data_flags(tn)
    tn.set_defaults(func=cmd_tune)

    bench = command("benchmark", "the cold-start benchmark suite: protocols x support sizes x seeds x systems",
                    "recmaml benchmark --data ../shared/data/movielens/ml-100k --protocol random,temporal,melu "
                    "--support-sizes 1,3,5,10,20 --seeds 0,1,2 --systems all --out bench", uses_model=False, device=False)
    bench.add_argument("--data", help="interaction log (file, folder, SQL URI): MovieLens, FilmTrust, CiaoDVD, CSV...")
    bench.add_argument("--name", help="the data set's name in the tables (default: the file or folder name)")
    bench.add_argument("--protocol", help="comma-separated: random, temporal, melu (default: all the log allows)")
    default_ks = ",".join(map(str, DEFAULT_KS))
    bench.add_argument("--support-sizes", "--k", dest="support_sizes", default=default_ks,
                       help=f"support sizes K (default {default_ks}; 0: users with no usable history, ranked from "
                       "the meta-learned start alone; --k: its former spelling)")
    bench.add_argument("--seeds", default="0,1,2", help="split seeds (default 0,1,2; at least 3 for intervals)")
    bench.add_argument("--systems", default="all", help=f"comma-separated systems or 'all': {', '.join(SYSTEMS)}")
    bench.add_argument("--config", help="TOML config of recmaml's systems: a path or a shipped config by name; defaults in code when omitted")
    bench.add_argument("--budget-seconds", type=float, default=300.0,
                       help="training budget of each iterative system per fit (default 300; 0: none)")
    bench.add_argument("--relevant-min", type=float, default=None,
                       help="hidden ratings at least this are relevant (default: 4 on 1-5, 3.5 on 0.5-4: the "
                            "smallest rating at 75%% of the log's range; every hidden row without ratings)")
    bench.add_argument("--cold-fraction", type=float, default=0.2, help="share of users held out as cold (0.2)")
    bench.add_argument("--out", required=True, help="folder for cells, results.md/.json and plots; finished "
                       "cells found there are kept (a stopped run resumes)")
    _add_training_threads(bench, " A number also sets the other systems' torch threads (1 per run is "
                          "fastest when runs share the cores); without it they use torch's default.")
    bench.add_argument("--grid", choices=["full", "minimal"], default="full",
                       help="full: tune every baseline on validation users (default); minimal: the first grid "
                            "value of each, untuned (a quick smoke run)")
    bench.add_argument("--page", help="also write the results page here (e.g. benchmarks/RESULTS.md)")
    bench.add_argument("--report-only", action="store_true", help="only rebuild the report from --out's cells")
    _add_data_flags(bench)
    bench.set_defaults(func=cmd_benchmark)

    qs = command("quickstart", "meta-train on MovieLens-100K, score held-out cold users, compare with baselines",
                 "recmaml quickstart --out runs/quickstart", uses_model=False)
    qs.add_argument("--data", help="MovieLens-100K folder (else $RECMAML_DATA, a local copy, a download, "
                    "or built-in synthetic data)")
    qs.add_argument("--out", default="runs/quickstart", help="folder for the model, ranked lists and metrics")
    qs.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    qs.add_argument("--no-download", action="store_true", help="never try the network")
    _add_training_threads(qs, " The baselines' fits use the same count.")
    qs.set_defaults(func=cmd_quickstart)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised where the program is, so that every cleanup (temporary outputs, partition folders)
    runs as for Ctrl-C; Python's default would end the process without it."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signal handlers live on the main thread
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    except _Terminated:  # also when it lands before the command's own handlers (while parsing, importing)
        print("recmaml: terminated (SIGTERM); partial outputs were removed", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


FORMER_SPELLINGS = {("benchmark", "--k"): "--support-sizes", ("tune", "--k"): "--support-size"}  # --k: a list length


def _note_former_spellings(args) -> None:
    for (command, old), new in FORMER_SPELLINGS.items():
        if args.command == command and any(a == old or a.startswith(old + "=") for a in args.argv):
            log.warning("note: `recmaml %s %s` is spelled %s now (%s still works); elsewhere --k is a list "
                        "length", command, old, new, old)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by `benchmark` to reproduce a run
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr, force=True)
    # a warning is one line, like the errors (the library's warnings carry their own explanation)
    warnings.showwarning = lambda message, category, *_rest, **_kw: log.warning("warning: %s", cut(str(message)))
    _note_former_spellings(args)
    try:
        with cli_surface():  # the library's messages give flags, not Python keywords
            if args.command not in _MODEL_COLUMNS:
                _resolve_columns(args)
            args.func(args)
    except (RecMamlError, OSError) as err:  # OSError: a folder that cannot be written, a full disk: the user's to fix
        print(f"recmaml {args.command}: error: {cut(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"recmaml {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: keep the traceback for the report
        import traceback

        traceback.print_exc()
        print(f"recmaml {args.command}: unexpected error (exit 1); please report it with the traceback above",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
