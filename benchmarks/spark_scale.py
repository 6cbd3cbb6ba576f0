"""Spark local[2] batch scoring against the single-process CLI, on the same cold users.

    .venv/bin/python benchmarks/spark_scale.py                     # 200,000 users, 10,000 items, top-20
    .venv/bin/python benchmarks/spark_scale.py --users 50000 --json spark.json

1. A model is meta-trained as in benchmarks/scale.py (code defaults, synthetic warm users, a short budget).
2. A Parquet history of --users cold users with 5 to 20 interactions each (not grouped by user).
3. Timed, in turn, each in a fresh process:
   CLI    `python -m recmaml recommend --model M --history H --k 20 --out cli.parquet` (wall time);
   Spark  `python -m recmaml spark-recommend ... --master local[2]`, with the session start-up (JVM,
          SparkSession, a first trivial job) measured apart in its own process and subtracted.
   Both outputs are checked: one list of --k per user, and the same lists (ids and ranks).
Reported: users/s of each, Spark's start-up seconds, and Spark's users/s over the CLI's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import polars as pl  # noqa: E402

from recmaml.files import write_json  # noqa: E402
from scale import fit_model, write_history  # noqa: E402

STARTUP = """
import time
start = time.perf_counter()
from recmaml.spark import session
spark = session("local[2]", quiet=True)
spark.range(10).count()
print(time.perf_counter() - start)
spark.stop()
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--warm-users", type=int, default=20_000)
    parser.add_argument("--fit-seconds", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recmaml-spark-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model, history = workdir / "model", workdir / "history.parquet"
    fit_model(model, args.items, args.warm_users, args.fit_seconds)
    rows = write_history(history, args.users, args.items, seed=7)
    base = ["--model", str(model), "--history", str(history), "--k", str(args.k), "--quiet"]
    cli_s = timed([sys.executable, "-m", "recmaml", "recommend", *base, "--out", str(workdir / "cli.parquet")])
    startup = subprocess.run([sys.executable, "-c", STARTUP], cwd=REPO_ROOT, capture_output=True, text=True)
    if startup.returncode != 0:
        raise SystemExit(f"Spark did not start:\n{startup.stderr[-3000:]}")
    startup_s = float(startup.stdout.strip().splitlines()[-1])
    spark_s = timed([sys.executable, "-m", "recmaml", "spark-recommend", *base, "--master", "local[2]",
                     "--out", str(workdir / "spark.parquet")])
    cli = pl.read_parquet(workdir / "cli.parquet").sort("user_id", "rank")
    spark = pl.read_parquet(workdir / "spark.parquet" / "*.parquet").sort("user_id", "rank")
    assert cli.height == spark.height == args.users * args.k, (cli.height, spark.height)
    assert cli.select("user_id", "item_id", "rank").equals(spark.select("user_id", "item_id", "rank"))
    scoring_s = spark_s - startup_s
    result = {"users": args.users, "history_rows": rows, "cli_seconds": cli_s, "cli_users_per_s": args.users / cli_s,
              "spark_seconds": spark_s, "spark_startup_seconds": startup_s, "spark_scoring_seconds": scoring_s,
              "spark_users_per_s": args.users / scoring_s, "spark_over_cli": (args.users / scoring_s) / (args.users / cli_s)}
    print(f"{args.users:,} users ({rows:,} history rows), top-{args.k} over {args.items:,} items, same lists: yes")
    print(f"  CLI (one process)   {cli_s:7.1f} s  {result['cli_users_per_s']:>9,.0f} users/s")
    print(f"  Spark local[2]      {spark_s:7.1f} s  of which session start-up {startup_s:.1f} s; scoring "
          f"{scoring_s:.1f} s, {result['spark_users_per_s']:,.0f} users/s")
    print(f"  Spark over CLI (users/s, start-up excluded): {result['spark_over_cli']:.2f}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
