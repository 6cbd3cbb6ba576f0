"""Calibration recipes A/B: one `fit` per (log, seed), then fit's last step (recmaml.calibrate) run again
for every variant on the same meta-trained scorers, and each variant's served nDCG@20 on the benchmark's
cold users (random and temporal protocols, K = 0,1,3,5,10,20: the same splits and history kinds as the
benchmark's recmaml cells). Meta-training is the expensive part and the same for every variant, so the
variants differ only in what calibrate chose.

    PYTHONPATH=. python benchmarks/recipes/calibration/ab.py --data ml-100k --seeds 0,1,2 --old 17f7648 \
        --out runs/calib-ab

Variants: 'old' (calibrate.py of the commit --old) and 'new' (this checkout's). The measurement of issue 28
(benchmarks/EXPERIMENTS.md) also ran 'rows' and 'smooth', with a calibrate.py that chose EASE's history rows
apart from its warm rows (since dropped: 'rows' did not help); 'smooth' is what 'new' is now.
One JSON per (log, seed) under --out; summary.py makes the table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path


ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from recmaml import calibrate as new_calibrate  # noqa: E402
from recmaml import recommender as recommender_module  # noqa: E402
from recmaml.benchmark import FittedMeta, make_splits, ranking_cell, log_relevance_threshold  # noqa: E402
from recmaml.config import Config  # noqa: E402
from recmaml.recommender import MetaRecommender  # noqa: E402

KS = (0, 1, 3, 5, 10, 20)
LOGS = {"ml-100k": "movielens/ml-100k", "filmtrust": "filmtrust", "ml-latest-small": "movielens/ml-latest-small",
        "ciaodvd": "ciaodvd"}


def read_log(name: str, data: Path):
    from recmaml.connectors import read_ciaodvd, read_filmtrust
    from recmaml.connectors.movielens import read_movielens

    path = data / LOGS[name]
    return {"ciaodvd": read_ciaodvd, "filmtrust": read_filmtrust}.get(name, read_movielens)(path)


def pending_cells(args):
    """(log name, seed, relevance threshold, {protocol: splits}, result path) of every (log, seed) of the
    command line whose result file is not written yet: the benchmark's splits, random and, on a log with
    timestamps, temporal (both hold out the same users)."""
    for name in args.data.split(","):
        log = read_log(name, args.shared)
        threshold = log_relevance_threshold(log)
        for seed in (int(s) for s in args.seeds.split(",")):
            path = args.out / f"{name}-seed{seed}.json"
            if not path.is_file():
                yield name, seed, threshold, {p: make_splits(log, p, seed, KS, 0.2) for p in ("random", "temporal")
                                              if p == "random" or log.timestamp is not None}, path


def old_module(commit: str):
    """calibrate.py as it was at `commit`, imported beside this checkout's (it uses this checkout's other modules)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:recmaml/calibrate.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path("/tmp") / f"calibrate_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"calibrate_{commit}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(old):
    return {"old": old.calibrate, "new": new_calibrate.calibrate}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="comma-separated: " + ",".join(LOGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--old", required=True, help="the commit whose calibrate.py is 'old'")
    parser.add_argument("--out", type=Path, default=Path("runs/calib-ab"))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    calibrations = variants(old_module(args.old))
    for name, seed, threshold, splits, path in pending_cells(args):
        warm = splits["random"].warm
        captured = {}
        real = recommender_module.calibrate

        def capture(rec, warm_log, user_feats, val_users):
            captured.update(config=rec.config, warm=warm_log, user_feats=user_feats, val_users=val_users)
            return real(rec, warm_log, user_feats, val_users)

        recommender_module.calibrate = capture
        try:
            start = time.perf_counter()
            rec = MetaRecommender(Config().replace(meta={"max_seconds": 900.0})).fit(warm, progress=False)
            fit_s = time.perf_counter() - start
        finally:
            recommender_module.calibrate = real
        result = {"data": name, "seed": seed, "fit_s": fit_s, "variants": {}}
        for variant, calibrate in calibrations.items():
            served = copy.copy(rec)
            served.config = captured["config"]
            start = time.perf_counter()
            chosen = calibrate(served, captured["warm"], captured["user_feats"], captured["val_users"])
            served.config = served.config.replace(serve=chosen)
            cells = {}
            for protocol, split in splits.items():
                fitted = FittedMeta(served).for_protocol(protocol)
                cells[protocol] = {str(k): ranking_cell(fitted.scores(s), s, threshold, full=False)["ndcg@20"]
                                   for k, s in split.test.items()}
            result["variants"][variant] = {"ndcg@20": cells, "calibrate_s": time.perf_counter() - start,
                                           "serve": {k: v for k, v in dataclasses.asdict(served.config.serve).items()
                                                     if "weights" in k},
                                           "priors": new_calibrate.describe(served.priors)}
            print(name, seed, variant, {p: round(c["5"], 4) for p, c in cells.items()}, flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
