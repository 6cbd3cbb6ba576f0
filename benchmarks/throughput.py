"""Cold-user serving throughput of MetaRecommender: batched, from a pandas frame and from Interactions,
against a per-user Python loop and against implicit's ALS fold-in, on MovieLens-100K and on a synthetic
20,000-item catalog; with meta-training seconds per epoch and the GFLOP/s reached while scoring.

    .venv/bin/python benchmarks/throughput.py                              # both catalogs, about 3 minutes
    .venv/bin/python benchmarks/throughput.py --repeat 5 --json throughput.json
    .venv/bin/python benchmarks/throughput.py --catalogs synthetic --synthetic-cold-users 5000

Catalogs (every id a STRING, so that the frame path below maps string ids, as a job's frame would):
  ml-100k    read_movielens(--data), recmaml.protocol.cold_split(log, n_support=5, seed=0); the model is
             MetaRecommender(load_config(configs/ml-100k.toml)).fit(warm users), with the run capped at
             --ml-max-seconds of meta-training (meta.max_seconds; 0: the config's full run, about a minute
             here); only speed is measured, and the epoch count does not change the serving cost. User
             ids become "u0000001", item ids "i00001" (zero-padded, so they sort as the integers did and
             the side features keep their rows). Cold users: the split's 189 cold users, each with a
             random 5 to 20 of all its rows (support and query together).
  synthetic  recmaml.synthetic.clustered_log: --synthetic-warm-users warm users over a catalog of
             exactly --synthetic-items (20,000) items (the vocabulary holds every item, seen or not), a
             short meta-training (--synthetic-epochs epochs, capped at --synthetic-max-seconds; config as in
             benchmarks/scale.py but with 256 sampled negatives in training, which makes an epoch cheaper;
             serving always uses the exact softmax over the catalog); cold users: --synthetic-cold-users
             new users with 5 to 20 draws each (repeated draws dropped, so a few have fewer rows).

Timed, cold users per second. (a), (b), (d) are called in turn (a, b, d, a, b, d, ...) so that a noisy
neighbour slows all alike, at least --repeat times each and until each has run --min-seconds in all;
the best time is kept (on a shared 2-core machine a 10 ms call's best of 3 is mostly noise). The loops
(c), (c') run --repeat times. Every call returns top-20 lists over the whole catalog, own items excluded:
  (a) frame   rec.recommend(frame, k=20): a pandas DataFrame (user_id, item_id: str; rating: float;
              timestamp: int), as a job calls it: frame validation, string id mapping, adaptation of every
              user in one batched computation, scoring, top-20, and a pandas frame of ranked lists back.
  (b) inter   rec.recommend(interactions, k=20): the same users as an Interactions built outside the timed
              region (the same rows; as_interactions(frame)), so (a) - (b) is the frame and id cost.
  (c) loop    the same model adapted one user at a time: rec.recommend(interactions, k=20, batch_size=1),
              i.e. the library's own Python loop over batches of ONE user (for each user: pad its support,
              one adaptation, score the catalog, exclude, top-20). This is the per-user equivalent of a
              learn2learn-style loop (clone, adapt on one task, evaluate) that shares (b)'s id mapping
              (done once) and fast path, so it is the fastest honest loop, and (b)/(c) the conservative
              ratio. Run on the first --loop-users users. Also shown, not judged: (c') a loop calling
              rec.recommend on a one-user Interactions per user (built outside the timed region), which
              adds the per-call id mapping and result building.
  (d) ALS     implicit ALS (factors 64, regularization 1.0, as benchmarks/speed.py) fitted on the same warm
              log (not timed); timed: the cold users' CSR built from index arrays in the warm item space
              (mapped outside the timed region, which favours ALS) and model.recommend(userids, csr, N=20,
              filter_already_liked_items=True, recalculate_user=True): one batched least-squares fold-in
              (implicit's recalculate_user) and the top-20 of the score matrix.
Targets, on each catalog: (b)/(c) >= 30, (a)/(d) >= 1.0, (b)/(d) >= 3.0, (a)/(b) >= 0.5; and (b) again
while a second CPU-bound process (a Python busy loop) runs, once with torch's default threads and once
with serve.threads = 'auto' (the free cores): auto's users/s at least 0.5 x the quiet (b).

Meta-training seconds per epoch: rec.history (wall time of the training loop, validation included, over
the epochs run; the differences of the per-epoch time stamps give the fastest epoch).

GFLOP/s while scoring: useful floating-point operations per cold user of the adapt+score work of the
serving fast path (recmaml.adapt.fast_user_vectors, s = inner steps at serving, N = items, d = embedding
dim, T = 2 * sum(in * out) over the user tower's Linear layers, the FLOPs of one forward pass):
    F_user = 2*N*d * s        inner-step logits  u @ V^T
           + 2*N*d * s        their gradient wrt u  (softmax - targets) @ V
           + 2*N*d            the final scores  u @ V^T
           + T * (2*s + 1)    tower forward per step, its input-gradient backward per step, final forward
i.e. F_user = (4s + 2) N d + (2s + 1) T; element-wise work (softmax, rank-1 corrections, top-k) and the
item tower (cached between calls) are not counted. Where users have no per-user inputs (no side
features, no set encoder: the synthetic catalog) they all start the first step from one vector, whose
catalog pass the fast path makes once per batch: s counts the other steps only (s - 1). GFLOP/s = F_user
x users/s of (b) / 1e9, next to torch's float32 matmul (4096 x d) @ (d x N) measured in the same run
(best of many), both with torch's default threads. "Bound" = matmul GFLOP/s / F_user: the users/s that
(b) would reach if all of its counted work ran at the matmul rate and nothing else cost anything; bound
over (d) is then the largest (b)/(d) this amount of work allows here (below 3.0: the target cannot be
met by removing overhead).

OPENBLAS_NUM_THREADS=1 (implicit's ALS is slower with threaded BLAS); implicit uses its default threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's ALS is slower with threaded BLAS

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from recmaml.connectors.movielens import read_movielens  # noqa: E402
from recmaml.files import write_json  # noqa: E402
from recmaml import MetaRecommender, load_config  # noqa: E402
from recmaml.baselines import ALSFoldIn  # noqa: E402
from recmaml.data import Interactions, RankedLists, Vocabulary  # noqa: E402
from recmaml.frames import as_interactions  # noqa: E402
from recmaml.protocol import cold_split  # noqa: E402
from recmaml.synthetic import clustered_log  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/movielens/ml-100k"
DEFAULT_CONFIG = REPO_ROOT / "configs" / "ml-100k.toml"
K = 20
ALS_PARAMS = {"factors": 64, "regularization": 1.0}
TARGETS = {"inter_over_loop": 30.0, "frame_over_als": 1.0, "inter_over_als": 3.0, "frame_over_inter": 0.5,
           "busy_auto_over_quiet": 0.5}
SYNTHETIC_CONFIG = {  # as benchmarks/scale.py, with sampled negatives in training: only speed is measured
    "model": {"objective": "implicit", "embedding_dim": 64, "user_hidden": [64]},
    "tasks": {"support_max": 20, "query_max": 32, "validation_users": 0.05, "negatives": 256},
    "meta": {"inner_steps": 1, "inner_lr": 0.5},
}


# ------------------------------------------------------------------------------------------ inputs


def _string_ids(prefix: str, ids: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.asarray(ids).astype(str), width))


def _restring(vocab: Vocabulary, prefix: str, width: int) -> Vocabulary:
    """Zero-padded string ids that sort as the integer ids did: index i keeps its meaning."""
    ids = _string_ids(prefix, vocab.ids, width)
    assert np.all(ids[1:] > ids[:-1]), "ids too wide for the padding"
    return Vocabulary(ids)


def with_string_ids(log: Interactions, users: Vocabulary, items: Vocabulary) -> Interactions:
    """`log` with string vocabularies `users`, `items` (same order as its own); features re-keyed alike."""
    uf = None if log.user_features is None else replace(log.user_features, ids=users)
    itf = None if log.item_features is None else replace(log.item_features, ids=items)
    return replace(log, users=users, items=items, user_features=uf, item_features=itf)


def pick_rows(user_idx: np.ndarray, gen: np.random.Generator, lo: int = 5, hi: int = 20) -> np.ndarray:
    """Row indices keeping, for every user, a random lo..hi of its rows (all of them if it has fewer)."""
    order = gen.permutation(len(user_idx))
    order = order[np.argsort(user_idx[order], kind="stable")]  # grouped by user, random within
    counts = np.bincount(user_idx)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    wanted = np.minimum(counts, gen.integers(lo, hi + 1, len(counts)))
    pos = np.arange(len(order)) - np.repeat(starts, counts)
    return np.sort(order[pos < np.repeat(wanted, counts)])


def history_frame(user_ids, item_ids, rating, timestamp) -> pd.DataFrame:
    """The cold users' rows as a job's pandas frame: string ids, float ratings, integer timestamps."""
    return pd.DataFrame({"user_id": pd.Series(user_ids, dtype=str), "item_id": pd.Series(item_ids, dtype=str),
                         "rating": np.asarray(rating, np.float64), "timestamp": np.asarray(timestamp, np.int64)})


def ml100k_case(data: Path, config: Path, max_seconds: float, seed: int) -> dict:
    log = read_movielens(data)
    split = cold_split(log, n_support=5, seed=0)
    users = _restring(log.users, "u", 7)
    items = _restring(log.items, "i", 5)
    warm = with_string_ids(split.warm, _restring(split.warm.users, "u", 7), items)
    # every row of every cold user (support and query share one user vocabulary), then 5-20 of them each
    sup, qry = split.cold_support, split.cold_query
    cold_user = np.concatenate([sup.user_idx, qry.user_idx])
    rows = pick_rows(cold_user, np.random.default_rng(seed))
    user_ids = _string_ids("u", np.concatenate([sup.user_ids(), qry.user_ids()])[rows], 7)
    item_ids = items.ids[np.concatenate([sup.item_idx, qry.item_idx])[rows]]
    rating = np.concatenate([sup.rating, qry.rating])[rows]
    timestamp = np.concatenate([sup.timestamp, qry.timestamp])[rows]
    assert np.isin(user_ids, users.ids).all()
    cfg = load_config(config)
    if max_seconds > 0:
        cfg = cfg.replace(meta={"max_seconds": max_seconds})
    return {"name": "ml-100k", "warm": warm, "cfg": cfg, "frame": history_frame(user_ids, item_ids, rating, timestamp),
            "describe": f"MovieLens-100K ({data}), config {config}"
                        + (f", meta.max_seconds = {max_seconds:g}" if max_seconds > 0 else "")}


def synthetic_case(n_warm: int, n_items: int, n_cold: int, epochs: int, max_seconds: float, seed: int) -> dict:
    width = len(str(n_items))
    items = Vocabulary(_string_ids("i", np.arange(n_items), width))  # the whole catalog, seen or not
    w = clustered_log(n_warm, n_items, min_per_user=5, max_per_user=40, seed=seed)
    warm = Interactions.from_ids(_string_ids("u", w["user_id"], 8), items.ids[w["item_id"]], rating=w["rating"],
                                 timestamp=w["timestamp"], items=items)
    c = clustered_log(n_cold, n_items, min_per_user=5, max_per_user=20, first_user=10**7, seed=seed + 1)
    frame = history_frame(_string_ids("u", c["user_id"], 8), items.ids[c["item_id"]], c["rating"], c["timestamp"])
    cfg = load_config(None, **{**SYNTHETIC_CONFIG, "meta": {**SYNTHETIC_CONFIG["meta"], "epochs": epochs,
                                                            "max_seconds": max_seconds, "patience": 0}})
    return {"name": "synthetic", "warm": warm, "cfg": cfg, "frame": frame,
            "describe": f"synthetic clustered_log, {n_items:,} items, {epochs} epochs (max {max_seconds:g} s)"}


# ----------------------------------------------------------------------------------------- timings


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(fns: dict, repeat: int, min_seconds: float, max_rounds: int = 1000) -> dict[str, list[float]]:
    """Wall times of each function, called in turn (a, b, c, a, b, c, ...): at least `repeat` rounds, and
    more until every function has run `min_seconds` in all (short calls are timed many times: on a shared
    machine the best of many is what the code costs; the best of 3 of a 10 ms call is mostly noise)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: first calls pay lazy initialization (thread pools, allocations)
        fn()
    while True:
        for name, fn in fns.items():
            times[name].append(_seconds(fn))
        rounds = len(next(iter(times.values())))
        if rounds >= max_rounds or (rounds >= repeat and all(sum(t) >= min_seconds for t in times.values())):
            return times


def serve_als(als: ALSFoldIn, user_idx: np.ndarray, item_idx: np.ndarray, n_users: int):
    """Fold in every cold user and take its top-K, its own items excluded (implicit's batch API)."""
    import scipy.sparse as sp

    csr = sp.csr_matrix((np.ones(len(user_idx), np.float32), (user_idx, item_idx)),
                        shape=(n_users, als.model.item_factors.shape[0]))
    return als.model.recommend(np.arange(n_users), csr, N=K, filter_already_liked_items=True, recalculate_user=True)


def flops_per_user(rec: MetaRecommender) -> dict:
    model = rec.model
    steps = rec.config.meta.inner_steps if rec.config.serve.inner_steps is None else rec.config.serve.inner_steps
    n, d = len(rec.items), rec.config.model.embedding_dim
    tower = 2 * sum(layer.in_features * layer.out_features for layer in model.user_tower if isinstance(layer, nn.Linear))
    # without per-user inputs (side features, a set encoder) every user starts from the same vector, and
    # the fast path makes the first step's catalog pass once per batch, not per user
    shared_first = model.user_features is None and model.support_embedding is None
    catalog_steps = max(steps - 1, 0) if shared_first else steps
    return {"steps": steps, "catalog_steps_per_user": catalog_steps, "n_items": n, "dim": d, "tower_forward": tower,
            "flops": (4 * catalog_steps + 2) * n * d + (2 * steps + 1) * tower}


def matmul_gflops(d: int, n_items: int, repeat: int, min_seconds: float, rows: int = 4096) -> float:
    """torch's float32 GFLOP/s on (rows x d) @ (d x n_items), best of many timings."""
    a, b = torch.randn(rows, d), torch.randn(d, n_items)
    best = min(_interleaved({"matmul": lambda: a @ b}, repeat, min_seconds)["matmul"])
    return 2 * rows * d * n_items / best / 1e9


def busy_users_per_s(rec: MetaRecommender, inter: Interactions, repeat: int, min_seconds: float) -> dict:
    """(b) again while another CPU-bound process runs (a Python busy loop), with torch's default threads
    and with serve.threads = 'auto' (the free cores): torch's threads spin on a busy machine."""
    import subprocess

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    before = rec.config
    out = {}
    try:
        time.sleep(1.0)  # let it be running when the calls look for free cores
        for label, threads in (("busy_default", torch.get_num_threads()), ("busy_auto", "auto")):
            rec.config = before.replace(serve={"threads": threads})
            best = min(_interleaved({label: lambda: rec.recommend(inter, k=K)}, repeat, min_seconds)[label])
            out[label] = inter.n_users / best
    finally:
        hog.kill()
        hog.wait()
        rec.config = before
    return out


def run_case(case: dict, repeat: int, loop_users: int, min_seconds: float) -> dict:
    warm, cfg, frame = case["warm"], case["cfg"], case["frame"]
    start = time.perf_counter()
    rec = MetaRecommender(cfg).fit(warm)
    fit_s = time.perf_counter() - start
    h = rec.history
    stamps = np.array([0.0] + [e["seconds"] for e in h.epochs])
    start = time.perf_counter()
    als = ALSFoldIn(**ALS_PARAMS, seed=0).fit(warm)
    als_fit_s = time.perf_counter() - start

    inter = as_interactions(frame, "history")  # (b)'s input: the same rows, built here, not timed
    n_users = inter.n_users
    als_users = inter.user_idx.astype(np.int64)
    als_items = rec.items.index(inter.item_ids()).astype(np.int64)  # the warm item space, not timed
    assert (als_items >= 0).all() and warm.items == rec.items
    loop_inter = inter.take(inter.user_idx < min(loop_users, n_users))
    loop_n = len(np.unique(loop_inter.user_idx))
    one_user = [inter.take(inter.user_idx == u) for u in range(loop_n)]  # (c'), built here, not timed

    # the work is what it claims: one list of K per user, none of the user's own items in it
    out_a, out_b = rec.recommend(frame, k=K), rec.recommend(inter, k=K)
    ids, _ = serve_als(als, als_users, als_items, n_users)
    assert isinstance(out_a, pd.DataFrame) and isinstance(out_b, RankedLists)
    assert len(out_a) == len(out_b) == n_users * K and ids.shape == (n_users, K)
    assert out_a["item_id"].to_numpy().tolist() == out_b.item_id.tolist()
    seen = set(zip(inter.user_ids().tolist(), inter.item_ids().tolist()))
    assert not any(p in seen for p in zip(out_b.user_id.tolist(), out_b.item_id.tolist()))
    loop_out = rec.recommend(loop_inter, k=K, batch_size=1)  # the same lists, up to float rounding in ties
    loop_agreement = float(np.mean(loop_out.item_id == out_b.item_id[: loop_n * K]))

    batch = {"frame": lambda: rec.recommend(frame, k=K), "inter": lambda: rec.recommend(inter, k=K),
             "als": lambda: serve_als(als, als_users, als_items, n_users)}
    loops = {"loop": lambda: rec.recommend(loop_inter, k=K, batch_size=1),
             "loop_calls": lambda: [rec.recommend(u, k=K) for u in one_user]}
    times = {**_interleaved(batch, repeat, min_seconds), **_interleaved(loops, repeat, 0.0)}
    users = {"frame": n_users, "inter": n_users, "als": n_users, "loop": loop_n, "loop_calls": loop_n}
    ups = {name: users[name] / min(t) for name, t in times.items()}

    ups.update(busy_users_per_s(rec, inter, repeat, min_seconds))
    fl = flops_per_user(rec)
    achieved = fl["flops"] * ups["inter"] / 1e9
    peak = matmul_gflops(fl["dim"], fl["n_items"], repeat, min_seconds)
    ratios = {"inter_over_loop": ups["inter"] / ups["loop"], "frame_over_als": ups["frame"] / ups["als"],
              "inter_over_als": ups["inter"] / ups["als"], "frame_over_inter": ups["frame"] / ups["inter"],
              "busy_auto_over_quiet": ups["busy_auto"] / ups["inter"]}
    return {
        "catalog": case["name"], "describe": case["describe"], "warm_users": warm.n_users, "warm_rows": len(warm),
        "items": len(rec.items), "cold_users": n_users, "cold_rows": len(inter), "loop_users": loop_n,
        "rows_per_user": [int(c) for c in np.percentile(np.bincount(inter.user_idx), [0, 50, 100])],
        "fit": {"seconds": fit_s, "train_loop_seconds": h.seconds, "epochs": len(h.epochs), "stopped": h.stopped,
                "seconds_per_epoch": h.seconds / max(len(h.epochs), 1),
                "fastest_epoch_seconds": float(np.diff(stamps).min()) if len(h.epochs) else float("nan"),
                "best_validation_ndcg": h.best_score, "als_fit_seconds": als_fit_s},
        "seconds": times, "users_per_s": ups, "flops": fl, "scoring_gflops": achieved, "matmul_gflops": peak,
        "bound_users_per_s": peak * 1e9 / fl["flops"],
        "loop_agreement": loop_agreement, "ratios": ratios, "pass": {k: bool(v >= TARGETS[k]) for k, v in ratios.items()},
    }


# ---------------------------------------------------------------------------------------------- main

_ROWS = (("frame", "(a) recommend(pandas frame, string ids)"), ("inter", "(b) recommend(Interactions)"),
         ("loop", "(c) one user at a time (batch_size=1)"), ("loop_calls", "(c') one recommend() call per user"),
         ("als", "(d) implicit ALS fold-in + recommend"),
         ("busy_default", "(b) beside a busy loop, torch's threads"), ("busy_auto", "(b) beside a busy loop, auto"))
_RATIOS = (("inter_over_loop", "(b)/(c)"), ("frame_over_als", "(a)/(d)"), ("inter_over_als", "(b)/(d)"),
           ("frame_over_inter", "(a)/(b)"), ("busy_auto_over_quiet", "(b) busy auto / (b) quiet"))


def _print(results: list[dict]) -> None:
    names = [r["catalog"] for r in results]
    print(f"\n{'cold users/s, top-20 over the catalog (best of repeats)':<44}" + "".join(f"{n:>14}" for n in names))
    for key, label in _ROWS:
        print(f"  {label:<42}" + "".join(f"{r['users_per_s'][key]:>14,.0f}" for r in results))
    print(f"  {'users timed: batch / loop':<42}" + "".join(f"{r['cold_users']:>8,}/{r['loop_users']:<5,}" for r in results))
    print(f"  {'items':<42}" + "".join(f"{r['items']:>14,}" for r in results))
    print(f"  {'meta-training s/epoch (fastest epoch)':<42}"
          + "".join(f"{r['fit']['seconds_per_epoch']:>7.2f} ({r['fit']['fastest_epoch_seconds']:.2f})" for r in results))
    print(f"  {'epochs run (stopped by)':<42}"
          + "".join(f"{str(r['fit']['epochs']) + ' (' + r['fit']['stopped'].split()[0] + ')':>14}" for r in results))
    print(f"  {'MFLOP per user, (4s+2)Nd + (2s+1)T':<42}" + "".join(f"{r['flops']['flops'] / 1e6:>14.3f}" for r in results))
    print(f"  {'scoring GFLOP/s, (b)':<42}" + "".join(f"{r['scoring_gflops']:>14.1f}" for r in results))
    print(f"  {'torch matmul GFLOP/s (4096 x d)@(d x N)':<42}" + "".join(f"{r['matmul_gflops']:>14.1f}" for r in results))
    print(f"  {'scoring / matmul':<42}" + "".join(f"{r['scoring_gflops'] / r['matmul_gflops']:>14.2f}" for r in results))
    print(f"  {'(b) users/s at the matmul rate: bound':<42}" + "".join(f"{r['bound_users_per_s']:>14,.0f}" for r in results))
    print(f"  {'bound / (d): best (b)/(d) this work allows':<42}"
          + "".join(f"{r['bound_users_per_s'] / r['users_per_s']['als']:>14.2f}" for r in results))
    print(f"  {'(c) lists equal to (b) lists (fraction)':<42}" + "".join(f"{r['loop_agreement']:>14.4f}" for r in results))
    print("\ntargets")
    for key, label in _RATIOS:
        cells = "".join(f"{r['ratios'][key]:>8.1f} {'PASS' if r['pass'][key] else 'MISS':<5}" for r in results)
        print(f"  {label + ' >= ' + format(TARGETS[key], 'g'):<42}{cells}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens-100K folder")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TOML config for MovieLens-100K")
    parser.add_argument("--catalogs", nargs="+", choices=("ml-100k", "synthetic"), default=["ml-100k", "synthetic"])
    parser.add_argument("--repeat", type=int, default=3, help="timings of each case; the best is kept")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="time (a), (b), (d) more than --repeat times until each has run this long in all")
    parser.add_argument("--loop-users", type=int, default=100, help="users served one at a time in (c)")
    parser.add_argument("--ml-max-seconds", type=float, default=20.0,
                        help="meta.max_seconds for the MovieLens fit (0: the config's full run)")
    parser.add_argument("--synthetic-items", type=int, default=20_000)
    parser.add_argument("--synthetic-warm-users", type=int, default=2_000)
    parser.add_argument("--synthetic-cold-users", type=int, default=3_000)
    parser.add_argument("--synthetic-epochs", type=int, default=1)
    parser.add_argument("--synthetic-max-seconds", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.loop_users < 1:
        parser.error("--repeat and --loop-users must be >= 1")

    env = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "torch": torch.__version__,
           "pandas": pd.__version__, "python": platform.python_version(), "machine": platform.machine()}
    print(f"torch {env['torch']} ({env['torch_threads']} threads), {env['cpus']} CPUs, pandas {env['pandas']}")
    results = []
    for name in args.catalogs:
        start = time.perf_counter()
        if name == "ml-100k":
            case = ml100k_case(args.data, args.config, args.ml_max_seconds, args.seed)
        else:
            case = synthetic_case(args.synthetic_warm_users, args.synthetic_items, args.synthetic_cold_users,
                                  args.synthetic_epochs, args.synthetic_max_seconds, args.seed)
        r = run_case(case, args.repeat, args.loop_users, args.min_seconds)
        print(f"{name}: {r['describe']}; {r['warm_users']:,} warm users ({r['warm_rows']:,} rows), "
              f"{r['cold_users']:,} cold users ({r['cold_rows']:,} rows, {r['rows_per_user'][0]}-"
              f"{r['rows_per_user'][2]} each); fit {r['fit']['seconds']:.1f} s, ALS fit "
              f"{r['fit']['als_fit_seconds']:.1f} s; case {time.perf_counter() - start:.0f} s", flush=True)
        results.append(r)
    _print(results)
    if args.json is not None:
        write_json(args.json, {"env": env, "k": K, "repeat": args.repeat, "als": ALS_PARAMS, "targets": TARGETS,
                               "results": results, "all_pass": all(all(r["pass"].values()) for r in results)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
