"""Absolute latency of one cold user's request: `MetaRecommender.recommend` on one user with 5 items of
MovieLens-100K, k=20, median and p99 over --calls calls (after 10 warm-up calls), in this process.

    .venv/bin/python benchmarks/single_user_latency.py                       # fits the ml-100k config first
    .venv/bin/python benchmarks/single_user_latency.py --model runs/ml100k   # or loads a saved model

Two inputs are timed: a polars frame (validated and mapped on every call, as a service would pass it) and
an Interactions already built. The machine, torch's threads and the load average are printed beside the
figures, since they set them.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from recmaml import MetaRecommender, load_config  # noqa: E402
from recmaml.connectors import read_interactions  # noqa: E402
from recmaml.frames import as_interactions  # noqa: E402


def timings(call, calls: int) -> np.ndarray:
    for _ in range(10):
        call()
    seconds = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        seconds[i] = time.perf_counter() - start
    return seconds * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/movielens/ml-100k")
    parser.add_argument("--model", help="a saved model (default: fit the ml-100k config on --data)")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    log = read_interactions(args.data)
    start = time.perf_counter()
    rec = MetaRecommender.load(args.model) if args.model else MetaRecommender(load_config("ml-100k")).fit(log)
    print(f"model ready in {time.perf_counter() - start:.1f} s")
    user = log.users.ids[0]
    rows = np.flatnonzero(log.user_ids() == user)[:5]
    frame = pl.DataFrame({"user_id": [user] * 5, "item_id": log.item_ids()[rows], "rating": log.rating[rows]})
    ready = as_interactions(frame, "history")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, serve.threads = {rec.config.serve.threads!r}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    for name, history in (("polars frame", frame), ("Interactions", ready)):
        ms = timings(lambda h=history: rec.recommend(h, k=20), args.calls)
        print(f"{name:<13} median {np.median(ms):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, "
              f"min {ms.min():.2f} ms over {args.calls} calls")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
