"""recmaml K=0/1/5 nDCG@20 of a probe folder (argument) against benchmarks/full-run's recmaml cells, with the best baseline.

    python benchmarks/recipes/priors/old_vs_new.py OUT
"""
import json, glob, ast, sys
from collections import defaultdict
def per_k(c):
    pk = c["per_k"]; return ast.literal_eval(pk) if isinstance(pk, str) else pk
rows = []
for f in sorted(glob.glob(sys.argv[1] + "/cells/*/*/seed*/recmaml_maml.json")):
    d, prot, seed = f.split("/")[-4:-1]
    new = per_k(json.load(open(f)))
    old_f = f"benchmarks/full-run/cells/{d}/{prot}/{seed}/recmaml_maml.json"
    old = per_k(json.load(open(old_f)))
    base = {}
    for b in glob.glob(f"benchmarks/full-run/cells/{d}/{prot}/{seed}/*.json"):
        c = json.load(open(b))
        if c.get("family") != "baseline": continue
        for k, v in per_k(c).items():
            if v["ndcg@20"] > base.get(k, ("", -1))[1]: base[k] = (c["system"], v["ndcg@20"])
    for k in ("0", "1", "5"):
        if k in new:
            b = base.get(k, ("-", float("nan")))
            print(f"{d:16s} {prot:8s} {seed} K={k}: old {old[k]['ndcg@20']:.4f} new {new[k]['ndcg@20']:.4f} "
                  f"({new[k]['ndcg@20']/old[k]['ndcg@20']:.3f})  best {b[0]} {b[1]:.4f} -> x{new[k]['ndcg@20']/b[1]:.3f}")
