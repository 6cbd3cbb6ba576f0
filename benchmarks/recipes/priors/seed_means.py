"""Three-seed means of recmaml's K=0/1/5 nDCG@20: a probe folder (argument 1) against benchmarks/full-run's
recmaml cells (the previous stop's shipped model, before they are replaced), with the best single baseline.

    python benchmarks/recipes/priors/seed_means.py runs/priors4
"""
import ast
import glob
import json
import sys
from collections import defaultdict

import numpy as np


def per_k(cell):
    pk = cell["per_k"]
    return ast.literal_eval(pk) if isinstance(pk, str) else pk


probe, rows = sys.argv[1], defaultdict(lambda: defaultdict(list))
for path in sorted(glob.glob(probe + "/cells/*/*/seed*/recmaml_maml.json")):
    data, protocol, seed = path.split("/")[-4:-1]
    old = per_k(json.load(open(f"benchmarks/full-run/cells/{data}/{protocol}/{seed}/recmaml_maml.json")))
    new = per_k(json.load(open(path)))
    best = defaultdict(dict)
    for other in glob.glob(f"benchmarks/full-run/cells/{data}/{protocol}/{seed}/*.json"):
        cell = json.load(open(other))
        if cell.get("family") == "baseline":
            for k, v in per_k(cell).items():
                best[k][cell["system"]] = v["ndcg@20"]
    for k in ("0", "1", "5"):
        rows[(data, protocol, k)]["old"].append(old[k]["ndcg@20"])
        rows[(data, protocol, k)]["new"].append(new[k]["ndcg@20"])
        rows[(data, protocol, k)]["best"].append(best[k])
print("| data set, protocol | K | before | now | best single baseline (three-seed mean) |")
print("|---|---|---|---|---|")
for (data, protocol, k), r in rows.items():
    systems = set.intersection(*(set(b) for b in r["best"]))
    means = {s: np.mean([b[s] for b in r["best"]]) for s in systems}
    name = max(means, key=means.get)
    old, new = np.mean(r["old"]), np.mean(r["new"])
    print(f"| {data}, {protocol} | {k} | {old:.4f} | {new:.4f} ({new / old:.3f} x) | {name} {means[name]:.4f} "
          f"({new / means[name]:.3f} x) | " + ("" if len(r["new"]) == 3 else f"{len(r['new'])} seeds |"))
