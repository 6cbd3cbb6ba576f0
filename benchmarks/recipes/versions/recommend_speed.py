"""users/s of `rec.recommend` on a frame of 5,000 new users (5-20 items each, string user ids, ratings 1-5),
one thread, for comparing two versions of the code on one saved model (fit it with the older version,
which the newer one loads). Run it from each checkout in turn, in one session:

    PYTHONPATH=OLD_CHECKOUT python benchmarks/recipes/versions/recommend_speed.py fit MODEL_DIR   # once
    PYTHONPATH=OLD_CHECKOUT python benchmarks/recipes/versions/recommend_speed.py serve MODEL_DIR
    PYTHONPATH=.            python benchmarks/recipes/versions/recommend_speed.py serve MODEL_DIR
    PYTHONPATH=.            python benchmarks/recipes/versions/recommend_speed.py dislikes MODEL_DIR  # 1-2 stars left out
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recmaml import MetaRecommender, load_config
from recmaml.connectors import read_interactions

ML100K = Path(__file__).resolve().parents[3].parent / "shared/data/movielens/ml-100k"
USERS = 5000

mode, model = sys.argv[1], sys.argv[2]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
torch.set_num_threads(1)
if mode == "fit":
    config = load_config("ml-100k").replace(meta={"max_seconds": 30.0, "threads": 1})
    MetaRecommender(config).fit(read_interactions(ML100K)).save(model)
    sys.exit()
rec = MetaRecommender.load(model)
if mode == "dislikes":
    rec = rec.with_serving(dislike_threshold=3.0)
rng = np.random.default_rng(0)
rows = []
for user in range(USERS):
    items = rng.choice(rec.items.ids, rng.integers(5, 21), replace=False)
    rows += [(f"u{user}", item, float(rng.integers(1, 6)), 880_000_000 + user) for item in items]
frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
seconds = []
for _ in range(3):
    start = time.perf_counter()
    rec.recommend(frame, k=20)
    seconds.append(time.perf_counter() - start)
print(f"{mode}: {USERS / min(seconds):,.0f} users/s (best of {[round(s, 2) for s in seconds]} s)")
