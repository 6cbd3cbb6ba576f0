"""Two fits of one warm log that differ only in meta.seed: how far apart their served nDCG@20 is on the same
cold users (the benchmark's split of the log, seed 0; random and temporal protocols, K = 1,3,5,10,20), and
how alike the serving choices they made are.

    PYTHONPATH=. python benchmarks/recipes/calibration/two_seeds.py --data ml-100k --fit-seeds 0,1 --out runs/two-seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab import KS, read_log  # noqa: E402
from recmaml.benchmark import FittedMeta, log_relevance_threshold, make_splits, ranking_cell  # noqa: E402
from recmaml.config import Config  # noqa: E402
from recmaml.recommender import MetaRecommender  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--fit-seeds", default="0,1")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/two-seeds"))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    log = read_log(args.data, args.shared)
    threshold = log_relevance_threshold(log)
    splits = {p: make_splits(log, p, args.split_seed, KS, 0.2) for p in ("random", "temporal")
              if p == "random" or log.timestamp is not None}
    warm = splits["random"].warm
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.fit_seeds.split(",")):
        path = args.out / f"{args.data}-split{args.split_seed}-fit{seed}.json"
        if path.is_file():
            continue
        start = time.perf_counter()
        rec = MetaRecommender(Config().replace(meta={"seed": seed, "max_seconds": 900.0})).fit(warm, progress=False)
        fit_s = time.perf_counter() - start
        cells = {p: {str(k): ranking_cell(FittedMeta(rec).for_protocol(p).scores(s), s, threshold, full=False)["ndcg@20"]
                     for k, s in sp.test.items()} for p, sp in splits.items()}
        serve = {k: v for k, v in dataclasses.asdict(rec.config.serve).items() if "weights" in k or "scales" in k}
        path.write_text(json.dumps({"data": args.data, "fit_seed": seed, "fit_s": fit_s, "ndcg@20": cells,
                                    "serve": serve}, indent=1))
        print(args.data, seed, {p: round(c["5"], 4) for p, c in cells.items()}, f"{fit_s:.0f} s", flush=True)


if __name__ == "__main__":
    main()
