"""Probe (issue 28): would blending the rating model's predictions with item mean + user offset lower the
MeLU protocol's MAE? The shipped rating model (fit's defaults, objective 'rating') and ItemMean (damping 5,
user damping 5) are fitted on the warm users of the benchmark's melu_split; the test users' MAE is printed
for each blend weight w: (1 - w) * model + w * item mean + offset. An oracle sweep: it says how much a
weight chosen on validation users could gain at most, and how flat the optimum is.

    python benchmarks/recipes/rating_prior/probe.py MOVIELENS_DIR SEED
"""
import sys

import numpy as np
import torch

from recmaml.baselines import ItemMean
from recmaml.config import load_config
from recmaml.connectors import read_movielens
from recmaml.protocol import melu_split, scores_at
from recmaml.recommender import MetaRecommender

torch.set_num_threads(1)
log = read_movielens(sys.argv[1])
seed = int(sys.argv[2])
split = melu_split(log, cold_fraction=0.2, seed=seed)
cfg = load_config(None).replace(model={"objective": "rating"})
rec = MetaRecommender(cfg).fit(split.warm, progress=False)
support, query = split.cold_support, split.cold_query
model = scores_at(rec.score(support, users=support.users.ids), query).astype(np.float64)
base = ItemMean(damping=5.0, user_damping=5.0).fit(split.warm)
prior = scores_at(base.score(support.user_idx, support.item_idx, split.n_cold, support.rating), query)
lo, hi = float(log.rating.min()), float(log.rating.max())
for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
    pred = np.clip((1 - w) * model + w * prior, lo, hi)
    print(f"w {w:.1f}  MAE {np.abs(pred - query.rating).mean():.4f}", flush=True)
