"""`recmaml fit` and `recmaml tune`: meta-training a model, and searching config fields by meta-training
many."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import tomllib
from pathlib import Path

from recmaml.cli.common import (LazyBar, Terminated, check_folder, checked_device, log, read_log,
                                read_user_features, with_features, with_training_threads)
from recmaml.cli.flags import (add_command, add_config, add_data_flags, add_out, add_training_threads,
                               add_user_features, whole_or_auto)
from recmaml.config import config_from_dict
from recmaml.errors import RecMamlError
from recmaml.progress import progress_bar

_WARM_DATA_HELP = "interaction log of warm users (file, folder, SQL URI)"


def add_fit(sub) -> None:
    fit = add_command(sub, "fit", "meta-train a model on a log of warm users",
                      "recmaml fit --config ml-100k --data ../shared/data/movielens/ml-100k --out runs/ml100k",
                      uses_model=False)
    add_config(fit, "TOML config: a path, or a shipped config by name (ml-100k, ml-100k-temporal, ml-100k-rating, "
               "ml-1m, ml-latest-small, tiny); defaults in code when omitted")
    fit.add_argument("--data", required=True, help=_WARM_DATA_HELP)
    add_out(fit, "model directory to write")
    add_user_features(fit, "user")
    fit.add_argument("--item-features", help="table of item side features keyed by --item-col "
                     "(text: categorical; 'a|b': multi-hot; numbers: numeric)")
    fit.add_argument("--nproc", type=int, default=None, help="meta-train on N processes of this machine "
                     "(torch.distributed via torchrun: gloo on CPUs, nccl on GPUs); each takes every N-th of the "
                     "meta-batch's meta.gradient_groups groups of users (N <= gradient_groups, 2 by default) and the "
                     "groups' gradients are added in one order, so it trains the model one process trains, bit for bit "
                     "with the same --threads per process. It pays on several "
                     "GPUs or many idle cores with large meta-batches; on a few CPU cores one process is faster "
                     "(2 processes on 2 cores: 1.44 x slower than one), since torch already uses every core. N "
                     "above the cores only adds contention (a warning says so)")
    fit.add_argument("--resume", action="store_true",
                     help="continue a killed or interrupted fit from the checkpoint it wrote after its last "
                     "finished epoch in --out, to the weights an uninterrupted run ends with (same config and "
                     "data, else exit 2); starts from the first epoch when there is none. Without --resume an "
                     "existing checkpoint is ignored and overwritten. meta.max_seconds counts the training time "
                     "recorded in the checkpoint")
    overrides = fit.add_argument_group("config overrides (applied over --config; saved with the model)")
    overrides.add_argument("--epochs", type=whole_or_auto, default=None, help="meta.epochs: a whole number >= 1, or "
                           "'auto' (from the log's size)")
    overrides.add_argument("--seed", type=int, default=None, help="meta.seed: the seed of the split into training "
                           "and validation users, the initial weights and the tasks drawn")
    overrides.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                           help="any config field, as in the TOML file (repeatable), e.g. --set meta.max_seconds=600 "
                           "--set model.objective=rating; VALUE is read as TOML, else as text")
    add_training_threads(fit)
    add_data_flags(fit)
    fit.set_defaults(func=cmd_fit)


def with_overrides(config, args):
    """The config with fit's override flags applied (--epochs, --seed, then each --set in order), checked
    as the TOML file is: an unknown key or a wrong value names the flag and lists the valid ones."""
    sections: dict[str, dict] = {}
    given = []
    for key, value in (("epochs", args.epochs), ("seed", args.seed)):
        if value is not None:
            sections.setdefault("meta", {})[key] = value
            given.append(f"--{key} {value}")
    for setting in args.overrides:
        section, key, value = _setting(setting)
        sections.setdefault(section, {})[key] = value
        given.append(f"--set {setting}")
    if not sections:
        return config
    raw = config.to_dict()
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw, " ".join(given))


def _setting(text: str) -> tuple[str, str, object]:
    """--set SECTION.KEY=VALUE as (section, key, value): VALUE read as a TOML value (5, 0.1, true, [1, 2],
    "text"), else taken as text (model.objective=rating needs no quotes)."""
    name, equals, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not equals or not dot or not section or not key:
        raise RecMamlError(f"--set {text}: give SECTION.KEY=VALUE, e.g. --set meta.epochs=5 (the sections and keys "
                           "of the TOML config: docs/configuration.md)")
    try:
        parsed = tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return section, key, parsed


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
    config = with_overrides(with_training_threads(load_config(args.config), args), args)
    if args.nproc and args.nproc > config.meta.gradient_groups:
        raise RecMamlError(
            f"--nproc {args.nproc} asks for more processes than meta.gradient_groups = {config.meta.gradient_groups} "
            "(each process takes whole groups of every meta-batch's users): add --set "
            f"meta.gradient_groups={args.nproc}, or gradient_groups = {args.nproc} under [meta] in the --config file "
            "(a one-process fit with that setting trains the same model), or use fewer processes")
    if args.nproc and args.nproc > 1 and not distributed.launched():
        _fit_on_ranks(args)
        return
    rank = int(os.environ.get("RANK", "0")) if distributed.launched() else 0
    if rank != 0:  # one voice: rank 0 reports, shows progress and saves
        args.quiet = True
        logging.getLogger("recmaml").setLevel(logging.ERROR)
    if args.device:
        config = config.replace(meta={"device": checked_device(args)})
    check_folder(args.out, "--out")
    item_features = read_side_features(args.item_features, id_col=args.item_col) if args.item_features else None
    warm = with_features(read_log(args.data, args), read_user_features(args), item_features, what="--data")
    log.info("warm log: %d interactions, %d users, %d items", len(warm), warm.n_users, warm.n_items)
    if not args.resume and rank == 0 and resume.exists(args.out):
        log.info("note: %s holds the checkpoint of an unfinished fit; starting over (--resume continues it)", args.out)
    rec = MetaRecommender(config)
    rec.columns = {"user": args.user_col, "item": args.item_col, "rating": args.rating_col or None,
                   "timestamp": args.timestamp_col or None}  # fit's messages name them; saved as later defaults
    try:
        with LazyBar(args, total=config.meta.epochs, unit="epoch", desc="meta-training") as bar:
            rec = rec.fit(warm, progress=bar, checkpoint_dir=args.out, resume=args.resume)
    except (KeyboardInterrupt, Terminated):
        if rank == 0 and resume.exists(args.out):
            log.info("the last epoch's checkpoint is kept in %s: rerun with --resume to continue", args.out)
        raise
    if rec.priors is not None:
        from recmaml.calibrate import describe

        log.info("serving priors: %s", describe(rec.priors))
    if rank == 0:
        rec.save(args.out)
        resume.discard(args.out)  # only once the model is saved: a kill before leaves a resumable fit
        log.info("saved the model to %s", args.out)


def _fit_on_ranks(args) -> None:
    """`recmaml fit --nproc N`: the same command on N processes started by torchrun (one node, gloo on
    CPUs, nccl on GPUs), each taking every N-th gradient group of every meta-batch; rank 0 saves the model."""
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


def add_tune(sub) -> None:
    tn = add_command(sub, "tune", "search config fields (random search, successive halving) on validation users",
                     "recmaml tune --data ../shared/data/movielens/ml-100k --space default --trials 24 "
                     "--budget-minutes 20 --out runs/tune", uses_model=False, device=False)
    tn.add_argument("--data", required=True, help=_WARM_DATA_HELP)
    tn.add_argument("--space", default="default", help="search space TOML (lists of values or { low, high, log, int } "
                    "ranges per config field), or 'default' for the shipped one")
    tn.add_argument("--trials", type=int, default=24, help="random configurations drawn (default 24)")
    tn.add_argument("--budget-minutes", type=float, default=20.0, help="meta-training time of all trials together")
    add_out(tn, "folder for leaderboard.csv and best.toml")
    add_config(tn, "the config the space's fields override (path or shipped name)")
    tn.add_argument("--protocol", default="random", help="random (default) or temporal supports of the validation users")
    tn.add_argument("--support-size", "--k", dest="support_size", type=int, default=5,
                    help="support size the validation users reveal (default 5; --k: its former spelling)")
    tn.add_argument("--seed", type=int, default=0, help="the split seed: tuning never sees the test users of "
                    "`recmaml benchmark --seeds` with this seed")
    add_training_threads(tn)
    add_data_flags(tn)
    tn.set_defaults(func=cmd_tune)


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
    base = with_training_threads(load_config(args.config), args)
    log_ = read_log(args.data, args)
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
              f"({args.protocol} supports), trial {result.best.number} of {args.trials}; the untuned config "
              f"{result.untuned.score:.4f} with the same {result.untuned.best_budget:.0f} s of meta-training")
    from recmaml.files import atomic_write

    text = tune.config_toml(result.best_config, header=header)
    atomic_write(out / "best.toml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(tune.leaderboard_table(result.trials, base, untuned=result.untuned))
    print(f"best: validation nDCG@20 {result.best.score:.4f} ({result.best.score - result.untuned.score:+.4f} over the "
          f"untuned config); config written to {out / 'best.toml'} "
          f"(recmaml fit --config {out / 'best.toml'}); leaderboard {out / 'leaderboard.csv'}; {result.seconds:.0f} s")
