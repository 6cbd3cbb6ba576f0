"""Command line: `recmaml SUBCOMMAND ...`. Each subcommand parses its flags, loads the config and calls
one library function. Exit codes: 0 success, 2 usage/config/data errors (one line, no traceback), 1 otherwise."""

from __future__ import annotations

import argparse
import logging
import sys

from recmaml import __version__
from recmaml.errors import RecMamlError

log = logging.getLogger("recmaml")


def _add_data_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument("--format", help="input format (csv, tsv, parquet, jsonl, sql, movielens-100k, ...); "
                        "inferred from the extension by default")
    parser.add_argument("--user-col", default="user_id", help="user id column (default: user_id)")
    parser.add_argument("--item-col", default="item_id", help="item id column (default: item_id)")
    parser.add_argument("--rating-col", default="rating", help="rating column; '' for implicit feedback")
    parser.add_argument("--timestamp-col", default="timestamp", help="timestamp column; '' for none")
    parser.add_argument("--table", help="SQL table to read (with an SQL URI)")


def _read(path, args):
    from connectors import read_interactions

    return read_interactions(path, format=args.format, user_col=args.user_col, item_col=args.item_col,
                             rating_col=args.rating_col or None, timestamp_col=args.timestamp_col or None,
                             table=args.table)


def cmd_fit(args) -> None:
    from recmaml import MetaRecommender, load_config

    warm = _read(args.data, args)
    rec = MetaRecommender(load_config(args.config)).fit(warm)
    rec.save(args.out)
    log.info("saved model to %s (%d epochs, best validation %.4f)", args.out,
             len(rec.history.epochs), rec.history.best_score)


def cmd_recommend(args) -> None:
    from connectors import write_ranked_lists
    from recmaml import MetaRecommender

    rec = MetaRecommender.load(args.model)
    ranked = rec.recommend(_read(args.history, args), k=args.k, exclude_seen=not args.include_seen,
                           batch_size=args.batch_size)
    write_ranked_lists(ranked, args.out, table=args.out_table)
    log.info("wrote %d ranked rows for %d users to %s", len(ranked), len(set(ranked.user_id.tolist())), args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recmaml", description="Meta-learned cold-start recommendation.")
    parser.add_argument("--version", action="version", version=f"recmaml {__version__}")
    parser.add_argument("--quiet", action="store_true", help="only print errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = sub.add_parser("fit", help="meta-train a model on a log of warm users",
                         epilog="example: recmaml fit --config configs/ml-100k.toml --data ml-100k/u.data "
                                "--format movielens-100k --out runs/ml100k")
    fit.add_argument("--config", help="TOML config (defaults in code when omitted)")
    fit.add_argument("--data", required=True, help="interaction log of warm users")
    fit.add_argument("--out", required=True, help="model directory to write")
    _add_data_flags(fit)
    fit.set_defaults(func=cmd_fit)

    rec = sub.add_parser("recommend", help="adapt to cold users' histories and write top-k ranked lists",
                         epilog="example: recmaml recommend --model runs/ml100k --history new_users.csv "
                                "--k 20 --out recs.parquet")
    rec.add_argument("--model", required=True, help="model directory written by `recmaml fit`")
    rec.add_argument("--history", required=True, help="the cold users' interactions")
    rec.add_argument("--k", type=int, default=20, help="list length (default 20)")
    rec.add_argument("--out", required=True, help="output: .csv, .parquet, .jsonl or an SQL URI")
    rec.add_argument("--out-table", default=None, help="SQL table for --out (default ranked_lists)")
    rec.add_argument("--include-seen", action="store_true", help="allow items from the history in the lists")
    rec.add_argument("--batch-size", type=int, default=None, help="cold users adapted together")
    _add_data_flags(rec)
    rec.set_defaults(func=cmd_recommend)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except RecMamlError as err:
        print(f"recmaml {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
