"""Loading speed and peak memory of a large interaction log, from Parquet and from CSV.

    .venv/bin/python benchmarks/load_speed.py                      # 20 million rows
    .venv/bin/python benchmarks/load_speed.py --rows 2000000 --json load_speed.json

A synthetic log (user_id int64 with a heavy-tailed activity over ~1M users, item_id int64 with a
Zipf-like popularity over ~50k items, rating float64 in 1.0..5.0 by halves, timestamp int64 Unix
seconds, rows in timestamp order) is written to Parquet and CSV; writing it is not timed. The log has
no duplicated (user, item) pair unless --duplicates N plants N of them (a later row for an existing pair).
With --workdir the files are kept and reused by a later run with the same --rows/--users/--items/
--duplicates/--seed.

Each format is then loaded in a fresh Python process, so that its peak memory is its own:
`recmaml.connectors.read_interactions(path)`. The child reports the wall
time of the load, its baseline RSS after imports and its peak RSS (getrusage ru_maxrss); the table shows
the peak minus the baseline ("peak delta") next to the size of the arrays the load returns
(user_idx, item_idx, rating, timestamp and both vocabularies' ids).

Targets (from the issue): at least 5 million rows/s from Parquet; peak delta at most 3x the result arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_ROWS_PER_S = {"parquet": 5_000_000}
TARGET_PEAK_RATIO = 3.0
MB = 1024 * 1024


# --- the synthetic log (parent process, not timed) --------------------------------------------------


def make_log(rows: int, n_users: int, n_items: int, duplicates: int, seed: int) -> dict[str, np.ndarray]:
    """A log of `rows` unique (user, item) pairs plus `duplicates` repeated pairs, in timestamp order."""
    rng = np.random.default_rng(seed)
    user_ids = np.sort(rng.choice(3 * n_users, n_users, replace=False)).astype(np.int64) + 1
    item_ids = np.sort(rng.choice(2 * n_items, n_items, replace=False)).astype(np.int64) + 1
    # Heavy-tailed user activity: lognormal, capped at a fifth of the catalog.
    activity = np.minimum(rng.lognormal(0.0, 1.2, n_users), n_items / 5 / (rows / n_users))
    # Zipf-like item popularity (exponent 0.9), item ranks shuffled against ids.
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity = rng.permutation(popularity) / popularity.sum()

    keys = np.empty(0, dtype=np.int64)
    while len(keys) < rows:  # draw 10% extra, drop repeated pairs, top up if still short
        want = int((rows - len(keys)) * 1.1) + 1000
        counts = rng.multinomial(want, activity / activity.sum())
        u = np.repeat(np.arange(n_users, dtype=np.int64), counts)
        i = rng.choice(n_items, size=len(u), p=popularity)
        keys = np.unique(np.concatenate([keys, u * n_items + i]))
    keys = rng.choice(keys, size=rows, replace=False)
    timestamp = rng.integers(1_420_070_400, 1_735_689_600, rows)  # 2015 .. 2024
    if duplicates:  # a repeat of an existing pair, up to 30 days after the original
        again = rng.choice(rows, size=duplicates, replace=False)
        keys = np.concatenate([keys, keys[again]])
        timestamp = np.concatenate([timestamp, timestamp[again] + rng.integers(1, 30 * 86_400, duplicates)])
    n = len(keys)
    order = np.argsort(timestamp, kind="stable")  # a log is written in time order
    return {
        "user_id": user_ids[keys // n_items][order],
        "item_id": item_ids[keys % n_items][order],
        "rating": (rng.integers(2, 11, n) / 2.0)[order],
        "timestamp": timestamp[order],
    }


def log_paths(workdir: Path) -> dict[str, Path]:
    return {"parquet": workdir / "log.parquet", "csv": workdir / "log.csv"}


def generate(workdir: str, params: str) -> None:
    """Write the log's files (runs in its own process: see `main`)."""
    import polars as pl

    p = json.loads(params)
    df = pl.DataFrame(make_log(p["rows"], p["users"], p["items"], p["duplicates"], p["seed"]))
    paths = log_paths(Path(workdir))
    df.write_parquet(paths["parquet"])
    df.write_csv(paths["csv"])
    (Path(workdir) / "log.json").write_text(params)


# --- one load (child process) ----------------------------------------------------------------------


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(fmt: str, path: str) -> None:
    """Load `path` once and print one JSON line with the timings and memory figures."""
    sys.path.insert(0, str(REPO_ROOT))
    import polars as pl

    from recmaml.connectors import read_interactions

    def load():
        return read_interactions(path)

    loader = "recmaml.connectors.read_interactions"

    baseline = _max_rss_bytes()
    start = time.perf_counter()
    inter = load()
    seconds = time.perf_counter() - start
    peak = _max_rss_bytes()

    arrays = [inter.user_idx, inter.item_idx, inter.rating, inter.timestamp, inter.users.ids, inter.items.ids]
    print(json.dumps({
        "format": fmt,
        "loader": loader,
        "rows": len(inter),
        "users": inter.n_users,
        "items": inter.n_items,
        "seconds": seconds,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "result_bytes": int(sum(a.nbytes for a in arrays if a is not None)),
        "polars_threads": pl.thread_pool_size(),
    }))


def run_self(*args: str) -> str:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


# --- the report --------------------------------------------------------------------------------------


def judge(r: dict) -> dict:
    r["rows_per_s"] = r["rows"] / r["seconds"]
    r["peak_delta_bytes"] = r["peak_rss_bytes"] - r["baseline_rss_bytes"]
    r["peak_ratio"] = r["peak_delta_bytes"] / r["result_bytes"]
    speed_target = TARGET_ROWS_PER_S.get(r["format"])
    r["speed_ok"] = None if speed_target is None else r["rows_per_s"] >= speed_target
    r["memory_ok"] = r["peak_ratio"] <= TARGET_PEAK_RATIO
    return r


def print_table(results: list[dict]) -> None:
    def verdict(ok):
        return "-" if ok is None else ("PASS" if ok else "MISS")

    head = (f"{'format':<8} {'rows':>11} {'seconds':>8} {'rows/s':>11} {'base MB':>8} {'peak MB':>8} "
            f"{'delta MB':>9} {'arrays MB':>10} {'ratio':>6}  {'speed':>5} {'memory':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['format']:<8} {r['rows']:>11,} {r['seconds']:>8.2f} {r['rows_per_s']:>11,.0f} "
              f"{r['baseline_rss_bytes'] / MB:>8.0f} {r['peak_rss_bytes'] / MB:>8.0f} "
              f"{r['peak_delta_bytes'] / MB:>9.0f} {r['result_bytes'] / MB:>10.0f} {r['peak_ratio']:>6.2f}  "
              f"{verdict(r['speed_ok']):>5} {verdict(r['memory_ok']):>6}")
    print(f"targets: >= {TARGET_ROWS_PER_S['parquet']:,} rows/s from Parquet; "
          f"peak delta <= {TARGET_PEAK_RATIO:g}x result arrays. loader: {results[0]['loader']}; "
          f"polars threads: {results[0]['polars_threads']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="unique (user, item) rows")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--duplicates", type=int, default=0, help="repeated (user, item) rows to plant")
    parser.add_argument("--formats", nargs="+", default=["parquet", "csv"], choices=["parquet", "csv"])
    parser.add_argument("--repeat", type=int, default=1, help="loads per format; the fastest is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where the log files go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--child", nargs=2, metavar=("FORMAT", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("WORKDIR", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    if args.generate:
        return generate(*args.generate)

    # Both the generation and every load run in a process of their own: Linux carries a parent's peak
    # RSS into ru_maxrss of the processes it starts, so this one must stay small.
    with tempfile.TemporaryDirectory(prefix="recmaml-load-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        paths = log_paths(workdir)
        params = json.dumps({k: getattr(args, k) for k in ("rows", "users", "items", "duplicates", "seed")})
        reuse = (workdir / "log.json").is_file() and (workdir / "log.json").read_text() == params
        start = time.perf_counter()
        if not reuse:
            run_self("--generate", str(workdir), params)
        sizes = ", ".join(f"{f} {p.stat().st_size / MB:,.0f} MB" for f, p in paths.items())
        print(f"{'reused' if reuse else 'generated'} {args.rows + args.duplicates:,} rows "
              f"({args.duplicates:,} duplicated pairs) in {time.perf_counter() - start:.1f} s: {sizes}; "
              f"{os.cpu_count()} CPUs", flush=True)

        results = []
        for fmt in args.formats:
            runs = [json.loads(run_self("--child", fmt, str(paths[fmt])).splitlines()[-1])
                    for _ in range(args.repeat)]
            results.append(judge(min(runs, key=lambda r: r["seconds"])))
        print_table(results)
    if args.json:
        sys.path.insert(0, str(REPO_ROOT))
        from recmaml.files import write_json

        write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "results": results})


if __name__ == "__main__":
    main()
