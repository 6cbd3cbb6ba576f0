"""Top-10 overlap of two ML-100K users with the Star Wars trilogy (50, 172, 181) rated 1 and 5 stars, served
old (every row a like), left out (the default) and counted against (benchmarks/EXPERIMENTS.md, Dislikes).

    PYTHONPATH=. python benchmarks/recipes/dislike/starwars.py MODEL_DIR   # a model fitted on ML-100K
"""
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[3]
warnings.simplefilter("ignore")
import torch
from recmaml import MetaRecommender, build
from recmaml.connectors import read_interactions
from ab import recalibrated
torch.set_num_threads(1)
rec = MetaRecommender.load(sys.argv[1])
warm = read_interactions(ROOT.parent / "shared/data/movielens/ml-100k")
prepared = build.prepare(rec.config, warm)
trilogy = [50, 172, 181]
variants = {"old (every row a like)": rec,
            "new default (1-2 stars left out)": recalibrated(rec, prepared, {"dislike_threshold": 3.0, "dislike_weight": 0.0}),
            "1-2 stars against, weight 1": recalibrated(rec, prepared, {"dislike_threshold": 3.0, "dislike_weight": 1.0})}
for name, r in variants.items():
    for kind in ("first", "sample"):
        fan = r.recommend_user(trilogy, ratings=[5.0] * 3, k=10, history_kind=kind).items
        hater = r.recommend_user(trilogy, ratings=[1.0] * 3, k=10, history_kind=kind).items
        print(f"{name}, {kind}: shared {len(set(fan) & set(hater))} of 10; fan {list(fan)}; hater {list(hater)}")
