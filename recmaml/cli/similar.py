"""`recmaml similar`: the items most like given items (or like every item), from a fitted model
(MetaRecommender.similar_items does the work; this module its flags and its table)."""

from __future__ import annotations

import sys

import numpy as np

from recmaml.cli.common import load_model, log
from recmaml.cli.flags import add_command, add_out
from recmaml.errors import DataError
# recmaml.explain.SIGNALS, the default first, with what each is; spelled here because that module imports torch,
# which `recmaml --help` must not wait for (tests/test_cli.py checks both)
SIGNAL_WORDS = {"embedding": "the cosine of the item tower's vectors", "ease": "EASE's learned item-item weights"}


def add_similar(sub) -> None:
    sim = add_command(sub, "similar", "write the k items most similar to given items (default: every item), "
                      "from the model's item vectors or its EASE weights",
                      "recmaml similar --model runs/ml100k --items 50 181 --k 10 --out similar.csv")
    sim.add_argument("--items", nargs="+", default=None, help="item ids to find neighbours of (default: every "
                     "item of the model)")
    sim.add_argument("--k", type=int, default=10, help="neighbours per item (default 10)")
    sim.add_argument("--signal", choices=tuple(SIGNAL_WORDS), default="embedding", help="'embedding' (default): the cosine of "
                     "the item tower's vectors; 'ease': EASE's learned item-item weights (the serving prior's kept "
                     "neighbours, which lean to popular items)")
    add_out(sim, "output with columns item_id, similar_item_id, score, rank: .csv, .tsv, .parquet, .jsonl, or an "
            "SQL URI with --table (default: CSV on stdout)", required=False)
    sim.add_argument("--table", default=None, help="SQL table for an SQL --out (default similar_items)")
    sim.set_defaults(func=cmd_similar)


def cmd_similar(args) -> None:
    import polars as pl

    from recmaml.connectors import check_output, write_frame

    if args.out:
        check_output(args.out)
    rec = load_model(args)
    items = rec.items.ids if args.items is None else model_ids(args.items, rec.items.ids, "--items")
    signal = args.signal
    ids, scores = rec.similar_items(items, k=args.k, signal=signal)
    k = ids.shape[1]
    table = pl.DataFrame({"item_id": np.repeat(items, k), "similar_item_id": ids.reshape(-1),
                          "score": scores.reshape(-1), "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(items))})
    if args.out:
        write_frame(table, args.out, table=args.table or "similar_items")
        log.info("wrote %d neighbours of %d items to %s (signal %s: %s)", table.height, len(items), args.out, signal,
                 SIGNAL_WORDS[signal])
    else:
        table.write_csv(sys.stdout)


def model_ids(texts: list[str], ids: np.ndarray, flag: str) -> np.ndarray:
    """Item ids typed on the command line, as the model's ids are typed (integers or text)."""
    if ids.dtype.kind not in "iu":
        return np.asarray(texts, dtype=ids.dtype)
    try:
        return np.asarray([int(t) for t in texts], dtype=ids.dtype)
    except ValueError:
        bad = next(t for t in texts if not t.lstrip("-").isdigit())
        raise DataError(f"{flag} {bad!r}: this model's item ids are integers (e.g. {ids[:3].tolist()})") from None
