"""The quality targets of the benchmark page (issue 28), computed from the cells of a full run: recmaml as
shipped against the best single baseline at K=5 (every cell >= 1.00 x, mean >= 1.05 x) and against the
blend of baselines (>= 1.00 x), at K = 1, 3, 10, 20 against the best single baseline of that K (>= 0.98 x),
K=0 against time-aware popularity (>= 1.02 x), the served model against itself without inner steps at
every K, and MeLU-protocol MAE against item mean + user offset (<= 0.99 x). Means over the seeds every
system of a row has finished (all three, or the row is left out).

    python benchmarks/targets.py [benchmarks/full-run]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

SINGLE_BASELINES = ("popularity", "recent_popularity", "item_mean", "item_mean_offset", "als", "ease", "item_knn",
                    "mult_vae")
SEEDS = (0, 1, 2)


def load(folder: Path) -> dict:
    cells = defaultdict(dict)
    for path in folder.glob("cells/*/*/seed*/*.json"):
        cell = json.loads(path.read_text())
        cells[(cell["data"], cell["protocol"], cell["system"])][cell["seed"]] = cell
    return cells


def mean(cells, data, protocol, system, k, metric="ndcg@20"):
    by_seed = cells.get((data, protocol, system), {})
    values = [by_seed[s]["per_k"].get(k, {}).get(metric) if s in by_seed else None for s in SEEDS]
    return None if any(v is None for v in values) else float(np.mean(values))


def best_single(cells, data, protocol, k):
    scored = [(mean(cells, data, protocol, b, k), b) for b in SINGLE_BASELINES]
    scored = [s for s in scored if s[0] is not None]
    return max(scored) if scored else (None, None)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/full-run")
    cells = load(folder)
    rows = sorted({(d, p) for d, p, _ in cells if p != "melu"})
    print("| data set | protocol | recmaml K=5 | best single baseline | ratio | blend | ratio to blend | "
          "K=1,3,10,20: lowest ratio to that K's best single baseline | K=0 / time-aware popularity | "
          "K where 0 steps scores higher |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for data, protocol in rows:
        ours = mean(cells, data, protocol, "recmaml_maml", "5")
        if ours is None:
            continue
        value, name = best_single(cells, data, protocol, "5")
        blend = mean(cells, data, protocol, "blend", "5")
        ratios.append(ours / value)
        k0, pop0 = mean(cells, data, protocol, "recmaml_maml", "0"), mean(cells, data, protocol, "recent_popularity", "0")
        others = []
        for k in ("1", "3", "10", "20"):
            mine, (best, _) = mean(cells, data, protocol, "recmaml_maml", k), best_single(cells, data, protocol, k)
            if mine is not None and best:
                others.append((mine / best, k))
        worse = [k for k in ("1", "3", "5", "10", "20") if (mean(cells, data, protocol, "recmaml_0_steps", k) or 0)
                 > (mean(cells, data, protocol, "recmaml_maml", k) or 0)]

        def ratio(a, b):
            return f"{a / b:.3f}" if a is not None and b else "-"

        lowest = f"{min(others)[0]:.3f} (K={min(others)[1]})" if others else "-"
        print(f"| {data} | {protocol} | {ours:.4f} | {name} {value:.4f} | {ours / value:.3f} | "
              f"{'-' if blend is None else f'{blend:.4f}'} | {ratio(ours, blend)} | {lowest} | {ratio(k0, pop0)} | "
              f"{', '.join(worse) or 'none'} |")
    if ratios:
        print(f"\nMean ratio to the best single baseline at K=5 over {len(ratios)} cells: {np.mean(ratios):.3f} "
              f"(target 1.05); lowest {min(ratios):.3f} (target 1.00).")
    print("\n| data set | MeLU MAE, recmaml | item mean + user offset | ratio |")
    print("|---|---|---|---|")
    for data in sorted({d for d, p, _ in cells if p == "melu"}):
        ours = mean(cells, data, "melu", "recmaml_maml", "melu", "mae")
        base = mean(cells, data, "melu", "item_mean_offset", "melu", "mae")
        if ours is not None and base is not None:
            print(f"| {data} | {ours:.4f} | {base:.4f} | {ours / base:.3f} |")


if __name__ == "__main__":
    main()
