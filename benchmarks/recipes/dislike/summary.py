"""Tables of benchmarks/recipes/dislike/ab.py's cells: nDCG@20 per variant, mean over the seeds found and per
seed, and the ratio of each variant to the old serving (ratio of the seed means), per log, protocol and K.

    python benchmarks/recipes/dislike/summary.py OUT [--k 1,3,5,10,20]
"""
import argparse
import glob
import json
from collections import defaultdict

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--k", default="1,3,5,10,20")
args = p.parse_args()
cells = defaultdict(dict)  # (log, protocol) -> seed -> {variant: {K: ndcg}}
for path in sorted(glob.glob(f"{args.out}/*_seed*.json")):
    d = json.load(open(path))
    for variant, per_protocol in d["ndcg@20"].items():
        for protocol, per_k in per_protocol.items():
            cells[(d["log"], protocol)].setdefault(d["seed"], {})[variant] = per_k
for (log, protocol), seeds in cells.items():
    variants = list(next(iter(seeds.values())))
    print(f"\n{log}, {protocol} histories, seeds {sorted(seeds)}: nDCG@20 mean (ratio to old) [per seed]")
    print("| K | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for k in args.k.split(","):
        row = []
        old = np.mean([seeds[s]["old"][k] for s in seeds])
        for v in variants:
            vals = [seeds[s][v][k] for s in sorted(seeds)]
            row.append(f"{np.mean(vals):.4f} ({np.mean(vals) / old:.3f}) [" + ", ".join(f"{x:.4f}" for x in vals) + "]")
        print(f"| {k} | " + " | ".join(row) + " |")
