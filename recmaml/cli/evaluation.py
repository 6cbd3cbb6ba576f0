"""`recmaml evaluate` and `recmaml benchmark`: the metrics of one fitted model on held-out rows, and the
cold-start benchmark suite (protocols x support sizes x seeds x systems) with its report."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from recmaml.cli.common import (RunWarnings, check_file, check_sizes, load_model, log, read_log, read_user_features,
                                with_features, with_training_threads)
from recmaml.cli.flags import (add_allow_unknown_items, add_command, add_config, add_data_flags, add_history,
                               add_history_kind, add_list_length, add_out, add_training_threads, add_user_features,
                               help_when_shown)
from recmaml.errors import RecMamlError, install_extra
from recmaml.progress import progress_bar


def add_evaluate(sub) -> None:
    ev = add_command(sub, "evaluate", "metrics of a model on held-out interactions of users it adapts to",
                     "recmaml evaluate --model runs/ml100k --history cold_support.csv --heldout cold_query.csv")
    add_history(ev, "what each evaluated user reveals (adapted on)")
    ev.add_argument("--heldout", required=True, help="the same users' hidden interactions")
    # --k is the list length here too: evaluate_users ranks each user's top-k list, as `recommend --k`
    # writes it, and its metrics score that list, so their cut-off is the list's length (recmaml.cli.flags)
    add_list_length(ev, ": the ranking metrics score each user's top-k list, so k is also their cut-off")
    add_history_kind(ev, "read from the timestamps: 'first' when every user's history precedes its held-out "
                     "rows, else 'sample' (without timestamps: the model's serve.history_kind)")
    ev.add_argument("--relevance-threshold", "--threshold", dest="relevance_threshold", type=float, default=None,
                    help="held-out ratings at least this are relevant (default: from the log's scale, as fit and "
                    "benchmark derive it: 4 on 1-5, 3.5 on 0.5-4; -1: every held-out row)")
    add_out(ev, "also write the metrics to this JSON file", required=False)
    ev.add_argument("--per-user", help="also write each user's metrics here (.csv, .tsv, .parquet, .jsonl or an SQL "
                    "URI with --table): one row per --history user, for your own significance tests")
    ev.add_argument("--table", default="user_metrics", help="table name when --per-user is an SQL URI (default "
                    "user_metrics)")
    add_user_features(ev, "the users'")
    add_allow_unknown_items(ev)
    add_data_flags(ev)
    ev.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> None:
    from recmaml.heldout import evaluate_users

    check_sizes(args)
    if args.out:
        check_file(args.out, "--out")
    if args.per_user:
        _check_per_user(args.per_user)
    rec = load_model(args)
    history, heldout = read_log(args.history, args), read_log(args.heldout, args)
    if args.user_features:
        history = with_features(history, read_user_features(args), what="--history")
    if args.relevance_threshold is not None and not math.isfinite(args.relevance_threshold):
        raise RecMamlError(f"--relevance-threshold {args.relevance_threshold}: give a rating (e.g. 4), or -1 to count "
                           "every held-out row")
    threshold = _relevance_threshold(args.relevance_threshold, history, heldout)
    rec = rec.with_history_kind(_history_kind(args.history_kind, rec, history, heldout))
    run_warnings = RunWarnings()
    with run_warnings.collecting():
        result = evaluate_users(rec, history, heldout, k=args.k, relevance_threshold=threshold,
                                allow_unknown_items=args.allow_unknown_items)
    run_warnings.report()
    metrics = {**result.summary(), "history_kind": rec.config.serve.history_kind}
    _note_unscored_users(metrics, threshold)
    for name, value in metrics.items():
        print(f"{name:<24}{value:.4f}" if isinstance(value, float) else f"{name:<24}{value}")
    if args.out:
        from recmaml.files import write_json

        write_json(args.out, metrics)
    if args.per_user:
        from recmaml.connectors import write_frame

        write_frame(result.per_user(), args.per_user, table=args.table)


def _check_per_user(dest) -> None:
    from recmaml.connectors import check_output

    try:
        check_output(dest)
    except RecMamlError as err:
        raise RecMamlError(f"--per-user {err}") from err


def _history_kind(flag, rec, history, heldout) -> str:
    """--history-kind; else what the rows show (recmaml.heldout.history_kind_shown); else the model's
    serve.history_kind. Says which it used and why: the metrics of one model differ between the two kinds."""
    from recmaml.heldout import history_kind_shown

    shown = history_kind_shown(history, heldout)
    if flag is not None:
        if shown is not None and shown != flag:
            log.warning("note: --history-kind %s, though the timestamps show %s", flag,
                        "every user's history before its held-out rows" if shown == "first"
                        else "history rows after held-out rows")
        else:
            log.info("history kind: %s (--history-kind)", flag)
        return flag
    if shown is None:
        kind = rec.config.serve.history_kind
        log.info("history kind: %s, the model's serve.history_kind (the rows have no timestamps to tell; "
                 "--history-kind sets it)", kind)
        return kind
    log.info("history kind: %s (%s; --history-kind sets another)", shown,
             "every user's history precedes its held-out rows: its first interactions" if shown == "first"
             else "some history rows come after held-out rows: a sample of each user's rows")
    return shown


def _note_unscored_users(metrics: dict, threshold) -> None:
    """Say who was adapted but not scored, so that the user count adds up to the history's users."""
    relevant = "every row counts" if threshold is None else f"rated at least {threshold:g}"
    for key, why in (("users_without_relevant", f"held-out rows, none relevant ({relevant})"),
                     ("users_without_heldout", "no held-out row"), ("skipped_users", "held-out rows but no history")):
        if metrics[key]:
            log.info("note: %d user%s had %s: not scored (%s)", metrics[key], "" if metrics[key] == 1 else "s",
                     why, key)


def _relevance_threshold(flag, history, heldout) -> float | None:
    """--relevance-threshold, or by default the relevant rating of the log's scale (recmaml.data.relevant_rating
    of the history and held-out ratings together), as fit and benchmark derive it; None: every row counts."""
    import numpy as np

    from recmaml.data import relevant_rating

    if flag is not None:
        return None if flag < 0 else flag
    ratings = [log_.rating for log_ in (history, heldout) if log_.rating is not None]
    threshold = relevant_rating(np.concatenate(ratings)) if ratings else None
    if threshold is None:
        log.info("relevant: every held-out row (the log has no rating scale; --relevance-threshold sets one)")
    else:
        log.info("relevant: held-out ratings of at least %g, from the log's scale (--relevance-threshold sets "
                 "another)", threshold)
    return threshold


def add_benchmark(sub) -> None:
    bench = add_command(sub, "benchmark",
                        "the cold-start benchmark suite: protocols x support sizes x seeds x systems",
                        "recmaml benchmark --data ../shared/data/movielens/ml-100k --protocol random,temporal,melu "
                        "--support-sizes 1,3,5,10,20 --seeds 0,1,2 --systems all --out bench", uses_model=False,
                        device=False)
    bench.add_argument("--data", help="interaction log (file, folder, SQL URI): MovieLens, FilmTrust, CiaoDVD, "
                       "Last.fm, CSV...")
    bench.add_argument("--name", help="the data set's name in the tables (default: the file or folder name)")
    bench.add_argument("--protocol", help="comma-separated: random, temporal, melu (default: all the log allows)")
    # the suite's support sizes and system names live in recmaml.benchmark, which imports torch: their help
    # is written when a help page is shown, so that building the parser (`recmaml --help`) does not import it
    sizes = bench.add_argument("--support-sizes", "--k", dest="support_sizes", default=None,
                               help="support sizes K")
    help_when_shown(sizes, lambda: f"support sizes K (default {_default_support_sizes()}; 0: users with no usable "
                    "history, ranked from the meta-learned start alone; --k: its former spelling)")
    bench.add_argument("--seeds", default="0,1,2", help="split seeds (default 0,1,2; at least 3 for intervals)")
    systems = bench.add_argument("--systems", default="all", help="comma-separated systems or 'all'")
    help_when_shown(systems, lambda: f"comma-separated systems or 'all': {', '.join(_system_names())}")
    add_config(bench, "TOML config of recmaml's systems: a path or a shipped config by name; defaults in code when "
               "omitted")
    bench.add_argument("--budget-seconds", type=float, default=300.0,
                       help="meta-training budget of each recmaml fit (default 300; 0: none); Mult-VAE stops "
                            "early on its validation users instead")
    bench.add_argument("--relevance-threshold", "--relevant-min", dest="relevance_threshold", type=float, default=None,
                       help="hidden ratings at least this are relevant (default: 4 on 1-5, 3.5 on 0.5-4: the "
                            "smallest rating at 75%% of the log's range; every hidden row without ratings)")
    bench.add_argument("--cold-fraction", type=float, default=0.2, help="share of users held out as cold (0.2)")
    add_out(bench, "folder for cells, results.md/.json and plots; finished cells found there are kept (a stopped "
            "run resumes)")
    add_training_threads(bench, " A number also sets the other systems' torch threads (1 per run is "
                         "fastest when runs share the cores); without it they use torch's default.")
    bench.add_argument("--grid", choices=["full", "minimal"], default="full",
                       help="full: tune every baseline on validation users (default); minimal: the first grid "
                            "value of each, untuned (a quick smoke run)")
    bench.add_argument("--page", help="also write the results page here (e.g. benchmarks/RESULTS.md)")
    bench.add_argument("--report-only", action="store_true", help="only rebuild the report from --out's cells")
    add_data_flags(bench)
    bench.set_defaults(func=cmd_benchmark)


def _default_support_sizes() -> str:
    from recmaml.benchmark import DEFAULT_KS

    return ",".join(map(str, DEFAULT_KS))


def _system_names() -> tuple[str, ...]:
    from recmaml.benchmark import SYSTEMS

    return tuple(SYSTEMS)


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
        raise RecMamlError(f"the benchmark's plots need matplotlib (the `bench` extra): {install_extra('bench')}") from err
    if isinstance(args.threads, int):  # every system's torch threads; 'auto' is each recmaml fit's own choice
        import torch

        torch.set_num_threads(args.threads)  # torch's threads spin when the machine is busy: fewer can be faster
    if not args.report_only:
        if not args.data:
            raise RecMamlError("--data is required (or pass --report-only to rebuild the report of --out)")
        log_ = read_log(args.data, args)
        protocols = _csv_list(args.protocol, "--protocol") if args.protocol else tuple(
            p for p in benchmark.PROTOCOLS if (p != "temporal" or log_.timestamp is not None)
            and (p != "melu" or benchmark.has_rating_scale(log_)))
        if not args.protocol and log_.timestamp is None:
            log.info("note: the log has no timestamps; the temporal protocol is left out")
        if not args.protocol and not benchmark.has_rating_scale(log_):
            what = "no ratings" if log_.rating is None else "counts (plays) for ratings"
            log.info(f"note: the log has {what}; the MeLU protocol and the item-mean baselines are left out")
        spec = benchmark.BenchmarkSpec(
            name=args.name or Path(args.data.rstrip("/")).stem, protocols=protocols,
            ks=_csv_list(args.support_sizes or _default_support_sizes(), "--support-sizes", int),
            seeds=_csv_list(args.seeds, "--seeds", int),
            systems=benchmark.resolve_systems(args.systems), relevance_threshold=args.relevance_threshold,
            cold_fraction=args.cold_fraction, budget_seconds=args.budget_seconds, grid=args.grid,
            config=with_training_threads(load_config(args.config), args),
            command="recmaml " + shlex.join(args.argv))
        cells = len(spec.seeds) * sum(p != "melu" or benchmark.SYSTEMS[s].family != "reference"
                                      for p in spec.protocols for s in spec.systems)
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
