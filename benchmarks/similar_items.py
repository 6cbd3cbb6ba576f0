"""Which signal gives the more sensible neighbours: MetaRecommender.similar_items on MovieLens-100K.

    recmaml fit --config ml-100k --data ../shared/data/movielens/ml-100k --out runs/ml100k
    .venv/bin/python benchmarks/similar_items.py --model runs/ml100k

For every item with at least 50 ratings, its 10 neighbours by each signal ('embedding': the cosine of the
item tower's vectors; 'ease': EASE's kept item-item weights), judged by what the model never saw: the
genres of u.item (mean Jaccard overlap of the item's genres with each neighbour's; 10 random items of the
same set as the floor). Also the neighbours' mean number of ratings (how far a signal leans to popular
items) and how many distinct items all the lists name, and the neighbours of a few well-known films.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from recmaml import MetaRecommender  # noqa: E402
from recmaml.connectors import read_interactions  # noqa: E402
from recmaml.explain import SIGNALS  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared/data/movielens/ml-100k"
SHOWN = (50, 71, 98, 94)  # Star Wars, The Lion King, The Silence of the Lambs, Home Alone


def movies(folder: Path) -> tuple[dict, dict]:
    """Titles and genre flags (19 booleans) by item id, from u.item."""
    titles, genres = {}, {}
    for line in (folder / "u.item").read_text(encoding="latin-1").splitlines():
        fields = line.split("|")
        titles[int(fields[0])] = fields[1]
        genres[int(fields[0])] = np.array([f == "1" for f in fields[5:]])
    return titles, genres


def genre_overlap(queries: np.ndarray, neighbours: np.ndarray, genres: dict) -> float:
    def jaccard(a, b):
        return (genres[a] & genres[b]).sum() / max((genres[a] | genres[b]).sum(), 1)

    return float(np.mean([np.mean([jaccard(q, n) for n in row]) for q, row in zip(queries, neighbours)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model fitted on ML-100K (recmaml fit --config ml-100k)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    rec = MetaRecommender.load(args.model)
    titles, genres = movies(args.data)
    counts = np.bincount(read_interactions(args.data).item_ids().astype(np.int64))
    queries = np.flatnonzero(counts >= 50)
    queries = queries[rec.items.index(queries) != -1]
    print(f"{len(queries)} items with >= 50 ratings; EASE's L2 strength {float(rec.priors.ease_lambda):g}")
    random = np.random.default_rng(0).choice(queries, size=(len(queries), args.k))
    print(f"random    genre overlap {genre_overlap(queries, random, genres):.3f}")
    for signal in SIGNALS:
        ids, _ = rec.similar_items(queries, k=args.k, signal=signal)
        print(f"{signal:9s} genre overlap {genre_overlap(queries, ids, genres):.3f}, neighbours' mean ratings "
              f"{counts[ids].mean():.0f}, distinct neighbours {len(np.unique(ids))}")
    for item in SHOWN:
        for signal in SIGNALS:
            ids, scores = rec.similar_items(item, k=6, signal=signal)
            print(f"{titles[item]} [{signal}]: " + "; ".join(f"{titles[i]} ({s:.3f})" for i, s in zip(ids, scores)))


if __name__ == "__main__":
    main()
