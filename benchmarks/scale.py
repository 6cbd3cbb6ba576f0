"""Batch scoring at scale: `recmaml recommend` on 100,000 and 1,000,000 synthetic cold users.

    .venv/bin/python benchmarks/scale.py                          # 100k and 1M users, 10k items, top-20
    .venv/bin/python benchmarks/scale.py --users 20000 200000 --workdir /tmp/scale --json scale.json

1. A model is meta-trained with the code's defaults on synthetic warm users (recmaml.synthetic.clustered_log:
   taste clusters over a 10,000-item catalog with Zipf popularity), for a fixed small budget: this benchmark
   is about scoring (with the default set encoder, each user starts its inner step from its own point).
2. For each size, a Parquet history of that many cold users with 5 to 20 interactions each is written.
   Rows are shuffled within blocks of 100,000 users, so the file is not grouped by user.
3. `python -m recmaml recommend --model M --history H --k 20 --out ranked.parquet --timings T` runs in a
   fresh process; its wall time and its own peak RSS (os.wait4's ru_maxrss) are measured, the output is
   checked (one list of 20 per user), and T says where the time went: read (reading and partitioning the
   history by user), map (ids to model indices), adapt (inner step and catalog scores), top-k, lists
   (ranked lists built), write.
4. The arithmetic: F_user FLOPs per user of adapt + score (benchmarks/throughput.py's flops_per_user:
   (4s + 2) N d + (2s + 1) T), the GFLOP/s the adapt stage reached, and torch's float32 matmul GFLOP/s
   measured in the same run with the threads serving used; "bound" is the adapt seconds at that rate.

Targets (issue 10): at 1,000,000 users, <= 45 s wall and <= 1.5 GB peak RSS on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from recmaml.files import write_json  # noqa: E402
from recmaml import Interactions, MetaRecommender, load_config  # noqa: E402
from recmaml.synthetic import clustered_log  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import torch  # noqa: E402
from throughput import flops_per_user, matmul_gflops  # noqa: E402

BLOCK_USERS = 100_000
RSS_TARGET_BYTES = 1.5 * 1024**3
SECONDS_TARGET = 45.0  # at 1,000,000 users


def fit_model(path: Path, n_items: int, warm_users: int, seconds: float) -> None:
    cols = clustered_log(warm_users, n_items, min_per_user=5, max_per_user=40, seed=1)
    warm = Interactions.from_ids(cols["user_id"], cols["item_id"], rating=cols["rating"], timestamp=cols["timestamp"])
    cfg = load_config(None, tasks={"query_max": 32, "validation_users": 0.05}, meta={"max_seconds": seconds})
    start = time.perf_counter()
    rec = MetaRecommender(cfg).fit(warm)
    rec.save(path)
    print(f"model: {warm.n_users:,} warm users, {warm.n_items:,} items, {len(rec.history.epochs)} epochs in "
          f"{time.perf_counter() - start:.0f} s (validation nDCG@20 {rec.history.best_score:.3f})", flush=True)


def write_history(path: Path, n_users: int, n_items: int, seed: int) -> int:
    """A Parquet history of n_users cold users (ids from 10^9 up), written block by block; returns rows."""
    rows = 0
    gen = np.random.default_rng(seed)
    with pq.ParquetWriter(path, pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                                           ("rating", pa.float32()), ("timestamp", pa.int64())])) as writer:
        for first in range(0, n_users, BLOCK_USERS):
            block = min(BLOCK_USERS, n_users - first)
            cols = clustered_log(block, n_items, min_per_user=5, max_per_user=20, first_user=10**9 + first,
                                 seed=seed * 1000 + first // BLOCK_USERS)
            shuffle = gen.permutation(len(cols["user_id"]))
            writer.write_table(pa.table({k: v[shuffle] for k, v in cols.items()}))
            rows += len(shuffle)
    return rows


def run_recommend(model: Path, history: Path, out: Path, k: int, timings: Path) -> tuple[float, int, str]:
    """Wall seconds and peak RSS (bytes) of one `recmaml recommend` process, and its stderr."""
    cmd = [sys.executable, "-m", "recmaml", "recommend", "--model", str(model), "--history", str(history),
           "--k", str(k), "--out", str(out), "--quiet", "--timings", str(timings)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"recmaml recommend failed (exit {proc.returncode}):\n{stderr}")
    return seconds, usage.ru_maxrss * 1024, stderr  # Linux reports KiB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--warm-users", type=int, default=20_000)
    parser.add_argument("--fit-seconds", type=float, default=60.0, help="meta-training budget")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recmaml-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "model"
    fit_model(model, args.items, args.warm_users, args.fit_seconds)

    results = []
    for n_users in args.users:
        history, out = workdir / f"history_{n_users}.parquet", workdir / f"ranked_{n_users}.parquet"
        start = time.perf_counter()
        rows = write_history(history, n_users, args.items, seed=7)
        print(f"{n_users:,} users: history of {rows:,} rows written in {time.perf_counter() - start:.0f} s", flush=True)
        timings = workdir / f"timings_{n_users}.json"
        seconds, rss, _ = run_recommend(model, history, out, args.k, timings)
        meta = pq.ParquetFile(out).metadata
        ranked_users = pq.read_table(out, columns=["user_id"]).column(0).unique()
        assert meta.num_rows == n_users * args.k and len(ranked_users) == n_users, "every user gets k items"
        stages = json.loads(timings.read_text())
        results.append({"users": n_users, "history_rows": rows, "seconds": seconds, "users_per_s": n_users / seconds,
                        "peak_rss_bytes": rss, "output_rows": meta.num_rows, "stages": stages["stages"],
                        "torch_threads": stages["torch_threads"]})
        history.unlink()
        out.unlink()

    print(f"\n{'users':>10}{'history rows':>14}{'seconds':>9}{'users/s':>10}{'peak RSS':>11}{'s / 100k users':>16}")
    for r in results:
        print(f"{r['users']:>10,}{r['history_rows']:>14,}{r['seconds']:>9.1f}{r['users_per_s']:>10,.0f}"
              f"{r['peak_rss_bytes'] / 2**30:>9.2f} GB{r['seconds'] / r['users'] * 1e5:>16.2f}")
    rec = MetaRecommender.load(model)
    flops = flops_per_user(rec)
    used = results[-1]["torch_threads"]  # {threads: chunks scored with them}
    threads = int(max(used, key=lambda t: used[t]))
    torch.set_num_threads(threads)
    matmul = matmul_gflops(rec.config.model.embedding_dim, len(rec.items), repeat=5, min_seconds=1.0)
    print(f"\nwhere the time went (s) and the arithmetic: F_user = {flops['flops'] / 1e6:.2f} MFLOP "
          f"(adapt + score, {flops['n_items']:,} items x {flops['dim']} dims); torch matmul here: {matmul:.1f} "
          f"GFLOP/s on {threads} thread(s), what most chunks were scored with ({used})")
    names = ["read", "map", "adapt", "top-k", "lists", "write"]
    print(f"{'users':>10}" + "".join(f"{n:>8}" for n in names) + f"{'other':>8}{'adapt GFLOP/s':>15}{'bound (s)':>11}")
    for r in results:
        st = r["stages"]
        other = r["seconds"] - sum(st.values())
        achieved = flops["flops"] * r["users"] / max(st.get("adapt", 0.0), 1e-9) / 1e9
        bound = flops["flops"] * r["users"] / (matmul * 1e9)
        r.update(adapt_gflops=achieved, matmul_gflops=matmul, bound_seconds=bound)
        print(f"{r['users']:>10,}" + "".join(f"{st.get(n, 0.0):>8.1f}" for n in names)
              + f"{other:>8.1f}{achieved:>15.1f}{bound:>11.1f}")
    largest, smallest = results[-1], results[0]
    growth = (largest["seconds"] / largest["users"]) / (smallest["seconds"] / smallest["users"])
    rss_ok = largest["peak_rss_bytes"] <= RSS_TARGET_BYTES
    time_ok = largest["seconds"] <= SECONDS_TARGET * largest["users"] / 1_000_000
    print(f"peak RSS at {largest['users']:,} users: {largest['peak_rss_bytes'] / 2**30:.2f} GB "
          f"(target <= 1.5 GB at 1M users): {'PASS' if rss_ok else 'MISS'}")
    print(f"wall at {largest['users']:,} users: {largest['seconds']:.1f} s (target <= {SECONDS_TARGET:.0f} s per "
          f"1M users): {'PASS' if time_ok else 'MISS'}")
    print(f"seconds per user, {largest['users']:,} over {smallest['users']:,} users: {growth:.2f} "
          f"(linear growth: about 1)")
    if args.json:
        write_json(args.json, {"results": results, "per_user_time_growth": growth, "rss_pass": rss_ok,
                               "time_pass": time_ok, "flops_per_user": flops})
    return 0


if __name__ == "__main__":
    sys.exit(main())
