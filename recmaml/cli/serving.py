"""`recmaml recommend`, `recmaml spark-recommend` and `recmaml predict`: serving a fitted model to users
it adapts to, as ranked lists (streamed by user chunk, or by Spark) or as scores of given pairs."""

from __future__ import annotations

from recmaml.cli.common import (LazyBar, RunWarnings, UserTotal, check_sizes, load_model, log, read_log,
                                read_user_features, with_features)
from recmaml.cli.flags import (add_allow_unknown_items, add_command, add_data_flags, add_history, add_history_kind,
                               add_keep_column_names, add_list_length, add_out, add_user_features)
from recmaml.errors import RecMamlError, install_extra

_AT_HELP = ("when the users arrive, for those whose history has no timestamp (e.g. no rows at all): Unix seconds or "
            "an ISO date such as 2024-03-01; it picks what was popular then (default: the end of the warm log)")


def add_recommend(sub) -> None:
    rec = add_command(sub, "recommend", "adapt to cold users' histories and write their top-k ranked lists",
                      "recmaml recommend --model runs/ml100k --history new_users.parquet --k 20 --out recs.parquet")
    add_history(rec, "the cold users' interactions (need not be sorted by user)")
    add_list_length(rec)
    add_out(rec, "output: .csv, .tsv, .parquet, .jsonl, or an SQL URI with --table")
    rec.add_argument("--table", default=None, help="SQL table for an SQL --out (default ranked_lists)")
    add_keep_column_names(rec)
    rec.add_argument("--candidates", help="user_id,item_id rows: rank only these items for each user (a user "
                     "with candidates and no history is ranked from the meta-learned start)")
    rec.add_argument("--candidates-format", help="format of --candidates when its extension does not say")
    rec.add_argument("--candidates-table", help="table to read when --candidates is an SQL URI")
    rec.add_argument("--include-seen", action="store_true", help="allow items of a user's history in its list")
    add_history_kind(rec)
    rec.add_argument("--at", default=None, help=_AT_HELP)
    rec.add_argument("--batch-size", type=int, default=None, help="cold users adapted together (default: the "
                     "model's serve.batch_size, 1024 unless set)")
    rec.add_argument("--chunk-rows", type=int, default=2_000_000,
                     help="history rows held in memory at once (default 2,000,000); larger histories are "
                          "split by user in one streaming pass")
    add_user_features(rec, "the cold users'")
    rec.add_argument("--timings", help="also write where the time went (read, map, adapt, top-k, lists, write) "
                     "to this JSON file")
    rec.add_argument("--explain", type=int, default=0, metavar="N", help="add a column `because`: up to N of the "
                     "user's history item ids that raised the row's score most (leave-one-out: the drop of its score "
                     "without that item); costs about one more adaptation per history row")
    add_allow_unknown_items(rec)
    add_data_flags(rec)
    rec.set_defaults(func=cmd_recommend)


def cmd_recommend(args) -> None:
    import time

    from recmaml.connectors import RankedListsWriter, check_output, iter_user_chunks
    from recmaml.serve import ServeSummary, StageTimes, serve_chunks

    check_sizes(args)
    check_output(args.out)
    rec = load_model(args)
    names = _output_names(args)
    user_features = read_user_features(args)
    candidates = None
    if args.candidates:
        candidates = read_log(args.candidates, args, format=args.candidates_format, table=args.candidates_table,
                              ratings=False)
    run_warnings = RunWarnings()
    total = UserTotal()
    chunks = iter_user_chunks(args.history, chunk_rows=args.chunk_rows, format=args.format, user_col=args.user_col,
                              item_col=args.item_col, rating_col=args.rating_col or None,
                              timestamp_col=args.timestamp_col or None, table=args.data_table, on_rows=total.rows,
                              encoding=args.encoding, delimiter=args.delimiter, decimal=args.decimal)
    if user_features:
        chunks = (with_features(chunk, user_features, what="--history") for chunk in chunks)
    times = StageTimes() if args.timings else None
    summary = ServeSummary()
    start = time.perf_counter()
    with (run_warnings.collecting(), RankedListsWriter(args.out, table=args.table, names=names) as out,
          LazyBar(args, unit="users", desc="scoring") as bar):
        reasons = ChunkReasons(rec, args.explain, args.batch_size, out.write)

        def on_chunk(chunk, users):
            reasons.chunk = chunk
            bar.set_total(total.chunk(len(chunk), len(users)))

        served = serve_chunks(rec, chunks, reasons.write, k=args.k, exclude_seen=not args.include_seen,
                              candidates=candidates, batch_size=args.batch_size, progress=bar.update, times=times,
                              on_chunk=on_chunk, allow_unknown_items=args.allow_unknown_items, summary=summary)
    run_warnings.report()
    log.info("wrote %d ranked rows to %s (%s)", out.rows, args.out, _served(summary))
    if times is not None:
        from recmaml.files import write_json

        write_json(args.timings, {"users": served, "rows": out.rows, "seconds": time.perf_counter() - start,
                                  "stages": times.seconds, "torch_threads": times.threads})


class ChunkReasons:
    """recommend's writer with --explain: each chunk's lists get their `because` column (MetaRecommender.explain)
    from the chunk they were ranked from (serve_chunks names it through on_chunk before it ranks it)."""

    def __init__(self, rec, n: int, batch_size: int | None, write):
        if n < 0:
            raise RecMamlError(f"--explain {n}: give the number of history items to name per row (0: no column)")
        self.rec, self.n, self.batch_size, self.out, self.chunk = rec, n, batch_size, write, None

    def write(self, ranked) -> None:
        self.out(ranked if not self.n else self.rec.explain(self.chunk, ranked, self.n, self.batch_size))


def _output_names(args) -> dict[str, str]:
    """The output's user_id and item_id renamed to the input's columns with --keep-column-names (checked
    before any work: a name the output already has is an error)."""
    from recmaml.frames import Columns, kept_names

    return kept_names(Columns(user=args.user_col, item=args.item_col)) if args.keep_column_names else {}


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


def add_spark_recommend(sub) -> None:
    srec = add_command(sub, "spark-recommend",
                       "the same ranked lists as `recommend`, computed by Spark (extra: spark)",
                       "recmaml spark-recommend --model runs/ml100k --history new_users.parquet --out ranked.parquet "
                       "--master local[2]", device=False)
    add_history(srec, "Parquet or CSV file or folder of the cold users' rows")
    add_out(srec, "folder of Parquet or CSV parts (by its extension or --out-format)")
    srec.add_argument("--out-format", choices=["parquet", "csv"], help="format of --out when its name does not say")
    add_list_length(srec)
    srec.add_argument("--master", default=None, help="Spark master, e.g. local[2] (default: spark-submit's, else "
                      "Spark's own default)")
    srec.add_argument("--candidates", help="Parquet or CSV of user_id,item_id rows: rank only these items")
    srec.add_argument("--candidates-format", choices=["parquet", "csv"], help="format of --candidates")
    srec.add_argument("--include-seen", action="store_true", help="allow items of a user's history in its list")
    srec.add_argument("--buckets", type=int, default=None, help="ranges of user ids users are split into (default: 4 per "
                      "Spark slot)")
    srec.add_argument("--batch-size", type=int, default=None, help="cold users adapted together in a worker")
    add_data_flags(srec)
    srec.set_defaults(func=cmd_spark_recommend)


def cmd_spark_recommend(args) -> None:
    from recmaml import spark as recmaml_spark

    check_sizes(args)
    # before Spark starts: the JVM takes seconds and prints its own lines before an error would show
    recmaml_spark.check_job(args.model, args.history, args.out, history_format=args.format,
                            candidates=args.candidates, candidates_format=args.candidates_format,
                            out_format=args.out_format)
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise RecMamlError(f"spark-recommend needs pyspark ({err}); install the `spark` extra: {install_extra('spark')}")

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
        run_warnings = RunWarnings()  # the workers' warnings, one summary line each as `recommend` gives
        for message in dropped.value:
            run_warnings.add(message)
        run_warnings.report()
        log.info("wrote the ranked lists to %s", args.out)
    finally:
        if ours:
            spark.stop()


def add_predict(sub) -> None:
    pred = add_command(sub, "predict",
                       "adapt to users' histories and predict the score of given (user, item) pairs",
                       "recmaml predict --model runs/ml100k-rating --history new_users.csv --pairs pairs.csv "
                       "--out pred.csv")
    add_history(pred, "the users' interactions")
    pred.add_argument("--pairs", required=True, help="user_id,item_id rows to predict")
    pred.add_argument("--pairs-format", help="format of --pairs when its extension does not say")
    pred.add_argument("--pairs-table", help="table to read when --pairs is an SQL URI")
    add_out(pred, "output with columns user_id, item_id (or the input's names with --keep-column-names), prediction")
    pred.add_argument("--table", default=None, help="SQL table for an SQL --out (default predictions)")
    add_keep_column_names(pred)
    pred.add_argument("--batch-size", type=int, default=None, help="users adapted together (default: the "
                      "model's serve.batch_size, 1024 unless set)")
    add_history_kind(pred)
    add_user_features(pred, "the users'")
    add_allow_unknown_items(pred)
    add_data_flags(pred)
    pred.set_defaults(func=cmd_predict)


def cmd_predict(args) -> None:
    import warnings

    import polars as pl

    from recmaml.recommender import RelevanceScoresWarning

    from recmaml.connectors import check_output, read_pairs, write_frame

    check_sizes(args)
    check_output(args.out)
    rec = load_model(args)
    names = _output_names(args)
    history = read_log(args.history, args)
    if args.user_features:
        history = with_features(history, read_user_features(args), what="--history")
    user_ids, item_ids = read_pairs(args.pairs, user_col=args.user_col, item_col=args.item_col,
                                    format=args.pairs_format, table=args.pairs_table)
    run_warnings = RunWarnings()
    with run_warnings.collecting():
        warnings.filterwarnings("ignore", category=RelevanceScoresWarning)  # the note below says it, once
        pred = rec.predict(history, user_ids, item_ids, batch_size=args.batch_size,
                           allow_unknown_items=args.allow_unknown_items)
    run_warnings.report()
    out = pl.DataFrame({"user_id": user_ids, "item_id": item_ids, "prediction": pred}).rename(names)
    n_unknown = int(out["prediction"].is_nan().sum())
    if n_unknown:
        log.warning("warning: %d pairs name items the model does not know; their prediction is NaN", n_unknown)
    write_frame(out, args.out, table=args.table or "predictions")
    log.info("wrote %d predictions to %s", out.height, args.out)
    if rec.config.model.objective != "rating":  # documented: a ranking model predicts scores, not ratings
        log.info("note: %s is a ranking model (objective %r): its predictions are relevance scores that order "
                 "items, not ratings; a model fitted with objective = \"rating\" predicts ratings", args.model,
                 rec.config.model.objective)
