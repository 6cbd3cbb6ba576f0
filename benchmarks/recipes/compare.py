"""Tables of recipe probes: nDCG@20 per (data set, protocol, K) for each candidate's cells, mean over the
seeds every candidate of that row has finished, beside the best baseline of the same splits.

    python benchmarks/recipes/compare.py runs/history [--baselines benchmarks/full-run] [--k 1,5]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def cells(folder: Path):
    for path in sorted(folder.glob("cells/*/*/seed*/*.json")):
        cell = json.loads(path.read_text())
        yield cell["data"], cell["protocol"], cell["seed"], cell["system"], cell


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path, help="a folder of candidates, each a benchmark --out folder")
    parser.add_argument("--baselines", type=Path, default=Path("benchmarks/full-run"))
    parser.add_argument("--k", default="1,5")
    args = parser.parse_args()
    ks = args.k.split(",")
    table = defaultdict(dict)  # (data, protocol, k) -> {candidate: {seed: ndcg}}
    for folder in sorted(p for p in args.root.iterdir() if p.is_dir()):
        for data, protocol, seed, system, cell in cells(folder):
            if system != "recmaml_maml":
                continue
            for k in ks:
                if k in cell["per_k"]:
                    table[(data, protocol, k)].setdefault(folder.name, {})[seed] = cell["per_k"][k]["ndcg@20"]
    best = defaultdict(dict)  # (data, protocol, k) -> {seed: (value, system)}
    for data, protocol, seed, system, cell in cells(args.baselines):
        if cell["family"] != "baseline":
            continue
        for k in ks:
            value = cell["per_k"].get(k, {}).get("ndcg@20")
            if value is not None and value > best[(data, protocol, k)].get(seed, (-1, ""))[0]:
                best[(data, protocol, k)][seed] = (value, system)
    candidates = sorted({c for row in table.values() for c in row})
    print("| data set | protocol | K | seeds | best baseline | " + " | ".join(candidates) + " |")
    print("|---|---|---|---|---|" + "---|" * len(candidates))
    for key in sorted(table):
        row = table[key]
        seeds = sorted(set.intersection(*(set(v) for v in row.values())))
        if not seeds:
            continue
        base = best.get(key, {})
        base_mean = np.mean([base[s][0] for s in seeds]) if all(s in base for s in seeds) else np.nan
        names = sorted({base[s][1] for s in seeds if s in base})
        cols = []
        for c in candidates:
            if c not in row or not all(s in row[c] for s in seeds):
                cols.append("")
                continue
            mean = np.mean([row[c][s] for s in seeds])
            cols.append(f"{mean:.4f} ({mean / base_mean:.3f})" if np.isfinite(base_mean) else f"{mean:.4f}")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {','.join(map(str, seeds))} | {'/'.join(names)} {base_mean:.4f} | "
              + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
