"""How finely the popularity prior must keep time: on CiaoDVD's temporal splits (users with no history,
K = 0 test users, seeds 0-2), nDCG@20 of the time-aware popularity baseline with 256, 512 and 2,048 time
edges, and of the serving prior alone (priors.recent: standardized log counts) with the edges fit keeps.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/recipes/priors/time_edges.py [../shared/data/ciaodvd]
"""
import sys
import warnings

import numpy as np
import torch

from recmaml.baselines import RecentPopularity
from recmaml.benchmark import make_splits, ranking_cell, user_times
from recmaml.connectors import read_ciaodvd
from recmaml.data import relevant_rating
from recmaml.priors import fit_priors, time_edges_for

warnings.simplefilter("ignore")
log = read_ciaodvd(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ciaodvd")
threshold = relevant_rating(log.rating)
print(f"prior edges: {time_edges_for(log.n_items)}")
print("seed | rows | days | baseline 256 | baseline 512 | baseline 2048 | prior")
for seed in (0, 1, 2):
    split = make_splits(log, "temporal", seed, [0], 0.2).test[0]
    times = user_times(split)

    def ndcg(scores) -> float:
        return round(ranking_cell(np.asarray(scores, np.float32), split, threshold, full=False)["ndcg@20"], 4)

    for rows in (None, threshold):
        prior = fit_priors(split.warm, None, 500.0, rows)
        for days in (14.0, 30.0, 91.0):
            base = []
            for edges in (256, 512, 2048):
                popularity = RecentPopularity(days, rows)
                popularity.EDGES = edges
                base.append(ndcg(popularity.fit(split.warm).score_at(times)))
            served = ndcg(prior.with_window(days).recent(torch.as_tensor(times)))
            print(f"{seed} | {'every' if rows is None else f'>= {rows:g}'} | {days:g} | "
                  + " | ".join(map(str, base)) + f" | {served}", flush=True)
