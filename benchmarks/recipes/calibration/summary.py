"""The A/B of ab.py as a table: per (log, protocol, K), each variant's nDCG@20 mean over the seeds present,
and its ratio to 'old'.

    python benchmarks/recipes/calibration/summary.py runs/calib-ab
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    rows = defaultdict(lambda: defaultdict(list))  # (data, protocol, k) -> variant -> [ndcg per seed]
    seeds = defaultdict(set)
    for path in sorted(Path(sys.argv[1]).glob("*.json")):
        result = json.loads(path.read_text())
        seeds[result["data"]].add(result["seed"])
        for variant, v in result["variants"].items():
            for protocol, per_k in v["ndcg@20"].items():
                for k, value in per_k.items():
                    rows[(result["data"], protocol, int(k))][variant].append(value)
    variants = sorted({v for r in rows.values() for v in r}, key=lambda v: (v != "old", v))
    print("| log | protocol | K | seeds | " + " | ".join(variants) + " | " + " | ".join(f"{v}/old" for v in variants[1:]) + " |")
    print("|" + "---|" * (4 + 2 * len(variants) - 1))
    ratios = defaultdict(list)
    for (data, protocol, k), r in sorted(rows.items()):
        means = {v: float(np.mean(r[v])) for v in variants}
        for v in variants[1:]:
            ratios[v].append(means[v] / means["old"])
        print(f"| {data} | {protocol} | {k} | {len(r['old'])} | " + " | ".join(f"{means[v]:.4f}" for v in variants)
              + " | " + " | ".join(f"{means[v] / means['old']:.3f}" for v in variants[1:]) + " |")
    print("\nmean ratio to old over rows: " + ", ".join(f"{v} {np.mean(x):.4f} (min {min(x):.3f})" for v, x in ratios.items()))


if __name__ == "__main__":
    main()
