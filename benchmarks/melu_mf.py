"""How far below item-mean-plus-offset can a rating model get on the MeLU protocol? A reference point.

    .venv/bin/python benchmarks/melu_mf.py                     # seeds 0 1 2, a small grid of (factors, reg)

Biased matrix factorization (global mean + user and item biases + user . item factors), fitted on the
warm users by alternating ridge regressions, and each cold user folded in EXACTLY: its bias and factors
are the ridge solution on its revealed ratings against the fixed item factors. This is the classic strong
non-meta answer to "a new user with a few ratings"; quick_quality.py --protocol melu compares recmaml with
ItemMean (item mean + user offset), and this script shows what the best of a standard alternative reaches
on the same splits (MAE on the 10 hidden ratings of each cold user, predictions clipped to 1..5).
Every grid point is scored on the test splits themselves, so its best row is an optimistic reference.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from recmaml.connectors.movielens import read_movielens  # noqa: E402
from recmaml.baselines import ItemMean  # noqa: E402
from recmaml.protocol import evaluate_ratings, melu_split, scores_at, support_arrays  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared/data/movielens/ml-100k"
GRID = [(5, 3.0), (10, 5.0), (20, 5.0), (10, 15.0)]


def ridge_rows(groups: list[np.ndarray], other: np.ndarray, target: np.ndarray, lam: float):
    """For each group of rows: the ridge solution [factors, bias] of target ~ other[rows] @ f + b."""
    k = other.shape[1]
    out = np.zeros((len(groups), k + 1))
    for g, rows in enumerate(groups):
        if len(rows):
            a = np.c_[other[rows], np.ones(len(rows))]
            out[g] = np.linalg.solve(a.T @ a + lam * np.eye(k + 1), a.T @ target[rows])
    return out


def fit_biased_mf(warm, k: int, lam: float, iterations: int = 15, seed: int = 0):
    """(global mean, item factors, item biases) by alternating ridge regressions."""
    gen = np.random.default_rng(seed)
    u, i, r = warm.user_idx, warm.item_idx, warm.rating.astype(np.float64)
    mu = r.mean()
    items = np.c_[gen.normal(0, 0.1, (warm.n_items, k)), np.zeros(warm.n_items)]
    by_user = np.split(np.argsort(u, kind="stable"), np.cumsum(np.bincount(u, minlength=warm.n_users))[:-1])
    by_item = np.split(np.argsort(i, kind="stable"), np.cumsum(np.bincount(i, minlength=warm.n_items))[:-1])
    for _ in range(iterations):
        users = ridge_rows(by_user, items[i, :k], r - mu - items[i, k], lam)
        items = ridge_rows(by_item, users[u, :k], r - mu - users[u, k], lam)
    return mu, items[:, :k], items[:, k]


def fold_in_mae(split, k: int, lam: float) -> float:
    mu, q, bi = fit_biased_mf(split.warm, k, lam)
    s, query = split.cold_support, split.cold_query
    s_items, q_items = split.warm.items.index(s.item_ids()), split.warm.items.index(query.item_ids())
    known = s_items >= 0
    rows = np.flatnonzero(known)
    groups = np.split(rows[np.argsort(s.user_idx[rows], kind="stable")],
                      np.cumsum(np.bincount(s.user_idx[rows], minlength=s.n_users))[:-1])
    safe = np.maximum(s_items, 0)
    users = ridge_rows(groups, q[safe], s.rating.astype(np.float64) - mu - bi[safe], lam)
    qi = np.maximum(q_items, 0)
    item_part = np.where(q_items >= 0, bi[qi] + (q[qi] * users[query.user_idx, :k]).sum(axis=1), 0.0)
    pred = np.clip(mu + item_part + users[query.user_idx, k], 1.0, 5.0)
    return evaluate_ratings(pred, query.rating)["mae"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    log = read_movielens(args.data)
    splits = [melu_split(log, cold_fraction=0.2, seed=s) for s in range(args.first_seed, args.first_seed + args.seeds)]
    base = np.mean([evaluate_ratings(scores_at(ItemMean(damping=5.0).fit(sp.warm).score(*support_arrays(sp.cold_support)),
                                               sp.cold_query), sp.cold_query.rating)["mae"] for sp in splits])
    print(f"item mean + user offset (damping 5): MAE {base:.4f}")
    for k, lam in GRID:
        mae = np.mean([fold_in_mae(sp, k, lam) for sp in splits])
        print(f"biased MF, {k} factors, ridge {lam}: MAE {mae:.4f}, {mae / base:.3f} x item mean + offset", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
