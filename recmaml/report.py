"""Tables, intervals, paired comparisons and plots of a benchmark folder (see recmaml.benchmark).

    write_report(Path("bench"))   # bench/results.md, bench/results.json, bench/plots/*.png

Every number comes from the cells under `bench/cells/`: means over seeds with a 95% t-interval, and for
each (data set, protocol, K) a paired comparison of recmaml's best system against the best baseline on
the same cold users (per-user differences pooled over seeds, with a 95% normal interval).
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from recmaml.benchmark import MELU_K, SYSTEMS, read_cells
from recmaml.files import atomic_write, write_json

HEADLINE = "ndcg@20"
RANKING_METRICS = ("ndcg@10", "ndcg@20", "recall@20", "hit@20", "mrr")
MELU_METRICS = ("query_ndcg@1", "random_query_ndcg@1", "query_ndcg@3", "random_query_ndcg@3", "mae", "rmse")


def interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval) of per-seed values; half-width NaN for one seed."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float("nan")
    from scipy.stats import t

    half = t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def paired(a_cells: list[dict], b_cells: list[dict], k: str, key: str) -> dict:
    """Per-user differences a - b of `key` (a per-user list in each cell's per_k[k]) pooled over the seeds
    both have: mean, 95% normal interval, users, and whether the interval excludes 0."""
    diffs = []
    seeds_b = {c["seed"]: c for c in b_cells}
    for a in a_cells:
        b = seeds_b.get(a["seed"])
        if b is None:
            continue
        va = np.array([np.nan if v is None else v for v in a["per_k"][k][key]], np.float64)
        vb = np.array([np.nan if v is None else v for v in b["per_k"][k][key]], np.float64)
        both = np.isfinite(va) & np.isfinite(vb)
        diffs.append(va[both] - vb[both])
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    if len(d) < 2:
        return {"mean": float("nan"), "half": float("nan"), "users": int(len(d)), "beyond_noise": False}
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    return {"mean": float(d.mean()), "half": float(half), "users": int(len(d)),
            "beyond_noise": bool(abs(d.mean()) > half)}


def summarize(cells: list[dict]) -> dict:
    """{data: {protocol: {"ks": [...], "systems": {name: {k: {metric: [mean, half]}}}, "comparison": {k: ...},
    "wall_s": {name: mean seconds per seed}, "seeds": [...]}}}"""
    groups: dict = defaultdict(lambda: defaultdict(list))  # (data, protocol) -> system -> cells
    for cell in cells:
        groups[(cell["data"], cell["protocol"])][cell["system"]].append(cell)
    out: dict = defaultdict(dict)
    for (data, protocol), by_system in groups.items():
        ks = sorted({k for cs in by_system.values() for c in cs for k in c["per_k"]}, key=_k_order)
        table = {}
        for name, cs in by_system.items():
            table[name] = {}
            for k in ks:
                rows = [c["per_k"][k] for c in cs if k in c["per_k"]]
                metrics = [m for m in (*RANKING_METRICS, *MELU_METRICS) if any(m in r for r in rows)]
                table[name][k] = {m: interval([r.get(m) for r in rows]) for m in metrics}
                table[name][k]["users"] = int(np.mean([r["users"] for r in rows])) if rows else 0
                if protocol == "melu" and any("mae_by_support" in r for r in rows):
                    bins = sorted({b for r in rows for b in r.get("mae_by_support", {})}, key=lambda b: int(b.split("-")[0]))
                    table[name][k]["mae_by_support"] = {
                        b: interval([r["mae_by_support"][b]["mae"] for r in rows if b in r.get("mae_by_support", {})])
                        for b in bins}
        out[data][protocol] = {
            "ks": ks, "seeds": sorted({c["seed"] for cs in by_system.values() for c in cs}), "systems": table,
            "wall_s": {n: float(np.mean([c.get("tune_s", 0) + c.get("fit_s", 0) + c.get("serve_s", 0) for c in cs]))
                       for n, cs in by_system.items()},
            "params": {n: [c.get("params") for c in sorted(cs, key=lambda c: c["seed"])] for n, cs in by_system.items()},
            "grid_edges": {n: _grid_edge(cs) for n, cs in by_system.items()},
            "comparison": {k: _compare(by_system, table, k, protocol) for k in ks},
            "commands": sorted({c.get("command", "") for cs in by_system.values() for c in cs}),
            "cells": sum(len(cs) for cs in by_system.values()),
        }
    return dict(out)


def _k_order(k: str):
    return (1, 0) if k == MELU_K else (0, int(k))


def _best(table: dict, names, k: str, metric: str, lower: bool = False) -> str | None:
    scored = [(table[n][k][metric][0], n) for n in names if k in table[n] and metric in table[n][k]
              and np.isfinite(table[n][k][metric][0])]
    if not scored:
        return None
    return (min if lower else max)(scored)[1]


def _compare(by_system: dict, table: dict, k: str, protocol: str) -> dict:
    """recmaml's best system against the best baseline at K: nDCG@20 (and MAE for rating models on the
    MeLU protocol), the ratio of means and the paired per-user difference."""
    fam = {n: SYSTEMS[n].family if n in SYSTEMS else "baseline" for n in by_system}
    base = [n for n in by_system if fam[n] == "baseline"]
    reference = [n for n in by_system if fam[n] == "reference"]
    meta = [n for n in by_system if fam[n] == "recmaml" and n != "recmaml_0_steps"]
    out = {}
    checks = [(HEADLINE, "per_user_ndcg@20", False)]
    if protocol == "melu":
        checks.append(("mae", "per_user_mae", True))
    for metric, per_user, lower in checks:
        b = _best(table, base, k, metric, lower)
        m = _best(table, meta, k, metric, lower)
        if b is None or m is None:
            continue
        out[metric] = {"recmaml": m, "baseline": b, "recmaml_mean": table[m][k][metric][0],
                       "baseline_mean": table[b][k][metric][0],
                       "ratio": table[m][k][metric][0] / table[b][k][metric][0],
                       "paired": paired(by_system[m], by_system[b], k, per_user)}
        r = _best(table, reference, k, metric, lower)
        if r is not None:  # the blend of baselines: recmaml's ratio to it, beside the comparison
            out[metric]["reference"] = r
            out[metric]["reference_ratio"] = table[m][k][metric][0] / table[r][k][metric][0]
    return out


def _grid_edge(cells: list[dict]) -> list[str]:
    """For each tuned parameter, where the chosen values sat in the grid: 'lam: 1000.0 (inside)' etc. Each
    value is placed in the grid of the cell that chose it (a grid widened after some cells were made leaves
    cells of both kinds); a value at the edge of any such grid is an edge."""
    # training, then serving parameters (a search of its own, the blend's, has no grid points)
    names = list(dict.fromkeys(n for c in cells for g in c.get("grid") or [] for n in g.get("params", {})))
    notes = []
    for name in names:
        where: dict[str, str] = {}
        for cell in cells:
            values = sorted({_key(g["params"][name]) for g in cell.get("grid") or [] if name in g.get("params", {})},
                            key=_sort_key)
            if not values or name not in (cell.get("params") or {}):
                continue
            value = _key(cell["params"][name])
            if where.get(value, "inside") == "inside":
                where[value] = _place(values, value)
        notes.append(f"{name}: " + ", ".join(f"{v} ({where[v]})" for v in sorted(where, key=_sort_key)))
    return notes


def _place(values: list[str], value: str) -> str:
    """Where `value` sits among a grid's sorted `values`: inside, at the low or high edge (a grid to
    widen), or 'one of N' for a choice that is no scale (a value that is not a number: which rows, None)."""
    if value not in values:
        return "off the grid"
    if any(_sort_key(v)[0] for v in values):
        return f"one of {len(values)}"
    pos = values.index(value)
    return "inside" if len(values) == 1 or 0 < pos < len(values) - 1 else ("low edge" if pos == 0 else "high edge")


def _key(v) -> str:
    return str(tuple(v)) if isinstance(v, list) else str(v)


def _sort_key(v: str):
    """Numbers by value, tuples of numbers ('(1, 20)', as _key writes a list) by their values, the rest
    (None, names) after them by their text."""
    try:
        return (0, (float(v),))
    except ValueError:
        pass
    try:
        return (0, tuple(float(x) for x in v.strip("()").split(",")))
    except ValueError:
        return (1, (v,))


# ------------------------------------------------------------------------------------------- markdown


def _fmt(pair, digits: int = 4) -> str:
    mean, half = pair
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if np.isfinite(half) else "")


def _ranking_table(block: dict, metric: str) -> list[str]:
    ks = block["ks"]
    lines = ["| system | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    best = {k: _best(block["systems"], block["systems"], k, metric) for k in ks}
    for name, row in block["systems"].items():
        cells = []
        for k in ks:
            text = _fmt(row[k][metric]) if k in row and metric in row[k] else "-"
            cells.append(f"**{text}**" if best[k] == name else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| cold users evaluated | " + " | ".join(
        str(next(iter(block["systems"].values()))[k]["users"]) for k in ks) + " |")
    return lines


def _metrics_table(block: dict, k: str, metrics) -> list[str]:
    present = [m for m in metrics if any(m in row.get(k, {}) for row in block["systems"].values())]
    lines = ["| system | " + " | ".join(present) + " | wall s per seed | chosen params (per seed) |",
             "|---|" + "---|" * (len(present) + 2)]
    for name, row in block["systems"].items():
        vals = [_fmt(row[k][m]) if m in row.get(k, {}) else "-" for m in present]
        params = "; ".join(_short(p) for p in block["params"][name]) if any(block["params"][name]) else ""
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {block['wall_s'][name]:.1f} | {params} |")
    return lines


def _short(params) -> str:
    """'lam=500.0, threshold=4.0'; the blend's weights per K as 'K=5: ease 1, mult_vae 0.5'."""
    def value(v):
        if isinstance(v, dict):
            return ", ".join(f"{name} {w:g}" for name, w in v.items() if w) or "none"
        return v

    if params and all(isinstance(v, dict) for v in params.values()):
        return " · ".join(f"K={k}: {value(v)}" for k, v in params.items())
    return ", ".join(f"{k}={value(v)}" for k, v in (params or {}).items())


def _comparison_lines(block: dict) -> list[str]:
    lines = ["| K | metric | recmaml best | best baseline | ratio | paired difference (95%) | users | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for k, comp in block["comparison"].items():
        for metric, c in comp.items():
            p = c["paired"]
            lower = metric == "mae"
            wins = (c["ratio"] < 1) if lower else (c["ratio"] > 1)
            verdict = ("recmaml better" if wins else "recmaml worse") + (
                ", beyond noise" if p["beyond_noise"] else ", within noise")
            lines.append(f"| {k} | {metric} | {c['recmaml']} {c['recmaml_mean']:.4f} | {c['baseline']} "
                         f"{c['baseline_mean']:.4f} | {c['ratio']:.3f} | {p['mean']:+.4f} ± {p['half']:.4f} | "
                         f"{p['users']} | {verdict} |")
    blend = [f"K={k} {c['reference_ratio']:.3f}" for k, comp in block["comparison"].items()
             for metric, c in comp.items() if "reference" in c and metric != "mae"]
    if blend:
        lines += ["", "recmaml's best system against the blend of baselines (a reference line: z-scored popularity, time-aware popularity, EASE + "
                  "item-kNN + Mult-VAE + time-aware popularity, weights per K tuned on validation users): " + ", ".join(blend) + "."]
    return lines


# flags of `recmaml benchmark` that cells recorded under a former spelling (recmaml.cli.flags.FORMER_SPELLINGS):
# the page gives today's, so that --k reads as what it is now, a list length, nowhere on it
RESPELLED = {"--k": "--support-sizes", "--relevant-min": "--relevance-threshold"}


def _portable(command: str) -> str:
    """A recorded command with its absolute paths relative to the folder the report is written from (the
    repository root, as benchmarks/full_run.sh runs it) and its flags spelled as today, so the page's
    commands work on another machine and read as the docs do."""
    command = re.sub(r"(?<![\w.~-])/[^\s`;'\"]+", lambda m: os.path.relpath(os.path.normpath(m.group())), command)
    return re.sub(r"(?<=\s)(--k|--relevant-min)(?=[\s=])", lambda m: RESPELLED[m.group(1)], command)


def _thread_counts(cells: list[dict]) -> str:
    """The torch threads the cells ran with (each cell records its run's), every count that occurs: one
    cell's count would misreport a page whose cells came from runs with different --threads."""
    counts = defaultdict(int)
    for c in cells:
        counts[c.get("environment", {}).get("torch_threads", "?")] += 1
    if len(counts) == 1:
        return str(next(iter(counts)))
    return ", ".join(f"{n} ({cells_} cells)" for n, cells_ in sorted(counts.items(), key=lambda kv: str(kv[0])))


def markdown(summary: dict, plots: dict[str, str], header: list[str] = ()) -> str:
    lines = ["# Benchmark results", "", *header,
             "Every number below is computed from the cells of this folder (`cells/`). Means over seeds with "
             "the half-width of a 95% t-interval; **bold** marks the best system of a column. The paired "
             "comparison pools per-user differences over seeds (the same cold users for both systems).", ""]
    for data, by_protocol in summary.items():
        lines += [f"## {data}", ""]
        if data in plots:
            lines += [f"![{data}]({plots[data]})", ""]
        for protocol, block in by_protocol.items():
            lines += [f"### {data}, {protocol} protocol (seeds {', '.join(map(str, block['seeds']))})", ""]
            if protocol == "melu":
                lines += ["MeLU's hidden-item metrics (10 hidden ratings per cold user, gain 2^r - 1) next to a "
                          "random order's expectation; MAE/RMSE for rating models; full-catalog metrics too.", ""]
                lines += _metrics_table(block, MELU_K, (*MELU_METRICS, *RANKING_METRICS))
                bins = _mae_bins_table(block)
                if bins:
                    lines += ["", "MAE by support size (cold users binned by how many ratings they reveal):", ""] + bins
            else:
                lines += ["nDCG@20 by support size K:", ""] + _ranking_table(block, HEADLINE)
                k5 = "5" if "5" in block["ks"] else block["ks"][len(block["ks"]) // 2]
                lines += ["", f"Every metric at K={k5}:", ""] + _metrics_table(block, k5, RANKING_METRICS)
            lines += ["", "recmaml's best system against the best baseline:", ""] + _comparison_lines(block)
            edges = {n: e for n, e in block["grid_edges"].items() if e}
            if edges:
                lines += ["", "Where the validation optimum landed in each grid (an edge: a grid to widen; 'one of N': a "
                          "choice of rows, which has no edge): " + "; ".join(
                    f"{n}: {', '.join(e)}" for n, e in edges.items()), ""]
            lines += ["", "Reproduce: " + "; ".join(f"`{_portable(c)}`" for c in block["commands"] if c), ""]
    return "\n".join(lines)


def _mae_bins_table(block: dict) -> list[str]:
    rows = {n: r[MELU_K]["mae_by_support"] for n, r in block["systems"].items() if "mae_by_support" in r.get(MELU_K, {})}
    if not rows:
        return []
    bins = sorted({b for r in rows.values() for b in r}, key=lambda b: int(b.split("-")[0]))
    lines = ["| system | " + " | ".join(f"{b} ratings" for b in bins) + " |", "|---|" + "---|" * len(bins)]
    for n, r in rows.items():
        lines.append(f"| {n} | " + " | ".join(_fmt(r[b]) if b in r else "-" for b in bins) + " |")
    return lines


# ---------------------------------------------------------------------------------------------- plots


HIGHLIGHT = "recmaml_maml"  # the shipped model: drawn thick and dark on every plot
ALWAYS_DRAWN = ("recmaml_maml", "recmaml_0_steps", "blend", "popularity", "recent_popularity")
NO_HISTORY_NO_SCORE = ("als", "ease", "item_knn")  # score from the history alone: at K = 0 every item ties
BASELINE_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#e377c2", "#7f7f7f")  # no reds


def _drawn_systems(block: dict) -> list[str]:
    """What a plot shows of a protocol's systems: recmaml (served, and with zero steps), the blend reference,
    the two popularities, and the two best other baselines at the headline K (5, or the middle K)."""
    rows = block["systems"]
    k = "5" if "5" in block["ks"] else block["ks"][len(block["ks"]) // 2]
    others = sorted((n for n in rows if n not in ALWAYS_DRAWN and SYSTEMS.get(n) and SYSTEMS[n].family == "baseline"
                     and HEADLINE in rows[n].get(k, {})), key=lambda n: -rows[n][k][HEADLINE][0])
    return [n for n in rows if n in ALWAYS_DRAWN or n in others[:2]]


def _style(name: str) -> dict:
    family = SYSTEMS[name].family if name in SYSTEMS else "baseline"
    if name == HIGHLIGHT:
        return {"linestyle": "-", "linewidth": 2.6, "color": "#b2182b", "zorder": 5}
    if family == "recmaml":
        return {"linestyle": "-", "linewidth": 1.4, "color": "#ef8a62", "zorder": 4}
    if family == "reference":
        return {"linestyle": ":", "linewidth": 1.6, "color": "#404040", "zorder": 3}
    baselines = [n for n, system in SYSTEMS.items() if system.family == "baseline"]
    return {"linestyle": "--", "linewidth": 1.2, "color": BASELINE_COLORS[baselines.index(name) % len(BASELINE_COLORS)]
            if name in baselines else "#7f7f7f"}


def plot(summary: dict, folder: Path) -> dict[str, Path]:
    """One PNG per data set: nDCG@20 against K for each ranking protocol (recmaml highlighted beside the
    systems _drawn_systems picks, its 95% interval as a band clipped to what can occur; no K = 0 point for a
    system that needs a history), and for the MeLU protocol the MAE against the revealed ratings. Returns
    {data set: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for data, by_protocol in summary.items():
        panels = [p for p in ("random", "temporal", "melu") if p in by_protocol]
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), squeeze=False)
        for ax, protocol in zip(axes[0], panels):
            block = by_protocol[protocol]
            if protocol == "melu":
                _mae_panel(ax, block)
                ax.set_title(f"{data}, MeLU protocol")
            else:
                _ranking_panel(ax, block)
                ax.set_title(f"{data}, {protocol} protocol")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best", framealpha=0.85)
        fig.suptitle("solid: recmaml (thick: the shipped model, with its 95% interval over seeds); dashed: baselines; "
                     "dotted: the blend of baselines",
                     fontsize=9, y=0.995)
        fig.tight_layout()
        path = folder / f"{data}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[data] = path
    return written


def _ranking_panel(ax, block: dict) -> None:
    ks = [int(k) for k in block["ks"]]
    for name in _drawn_systems(block):
        row = block["systems"][name]
        mine = [k for k in ks if HEADLINE in row.get(str(k), {}) and not (k == 0 and name in NO_HISTORY_NO_SCORE)]
        if not mine:
            continue
        mean = np.array([row[str(k)][HEADLINE][0] for k in mine])
        half = np.nan_to_num(np.array([row[str(k)][HEADLINE][1] for k in mine]))
        (line,) = ax.plot(mine, mean, marker="o", ms=3, label=name, **_style(name))
        if name == HIGHLIGHT:  # one band: nine overlapping three-seed bands hid every line
            ax.fill_between(mine, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1), color=line.get_color(),
                            alpha=0.12)
    ax.set(xlabel="support size K (revealed interactions)", ylabel="nDCG@20")
    ax.set_xscale("symlog", linthresh=1.0)  # logarithmic from 1 on, with room for K = 0
    ax.set_xticks(ks, [str(k) for k in ks])


def _mae_panel(ax, block: dict) -> None:
    for name, row in block["systems"].items():
        bins = row.get(MELU_K, {}).get("mae_by_support")
        if not bins:
            continue
        labels = sorted(bins, key=lambda b: int(b.split("-")[0]))
        x = np.arange(len(labels))
        mean = np.array([bins[b][0] for b in labels])
        half = np.nan_to_num(np.array([bins[b][1] for b in labels]))
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=name, **_style(name))
        if name == HIGHLIGHT:
            ax.fill_between(x, np.clip(mean - half, 0, None), mean + half, color=line.get_color(), alpha=0.12)
        ax.set_xticks(x, labels)
    ax.set(xlabel="revealed ratings", ylabel="MAE (lower is better)")


MACHINE_PREFIX = "- Machine: "  # the first generated line under a page's title


def write_report(out: Path, page: Path | None = None) -> dict:
    """results.json, results.md and plots/ of every cell under `out`; returns the summary. page: also
    write the markdown there (e.g. benchmarks/RESULTS.md), its plot links relative to the page."""
    out = Path(out)
    cells = read_cells(out)
    if not cells:
        return {}  # nothing to report: no page is written (the CLI says so)
    summary = summarize(cells)
    plots = plot(summary, out / "plots")
    write_json(out / "results.json", summary, compact=True)
    header = environment_lines(cells)
    for target in [out / "results.md"] + ([Path(page)] if page else []):
        links = {data: os.path.relpath(path.resolve(), target.resolve().parent) for data, path in plots.items()}
        preface = kept_preface(target) if target != out / "results.md" else []
        text = markdown(summary, links, preface + header)
        atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return summary


def kept_preface(page: Path) -> list[str]:
    """The hand-written lines of an existing page between its title and the generated "- Machine:" line,
    so that rebuilding the page in place keeps what a person wrote there (and its plot links stay relative
    to the page, which a page built elsewhere and pasted in would get wrong)."""
    if not page.is_file():
        return []
    lines = page.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "# Benchmark results":
        return []
    for end, line in enumerate(lines):
        if line.startswith(MACHINE_PREFIX):
            return lines[2:end]
    return []


def environment_lines(cells: list[dict]) -> list[str]:
    """Machine, versions, seeds and wall time of the cells, for the top of the page."""
    if not cells:
        return []
    env = cells[0].get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    wall = defaultdict(float)
    for c in cells:
        wall[c["data"]] += c.get("tune_s", 0) + c.get("fit_s", 0) + c.get("serve_s", 0)
    from datetime import datetime, timedelta

    spans = []
    for c in cells:
        if c.get("finished"):
            end = datetime.strptime(c["finished"], "%Y-%m-%d %H:%M:%S")
            spans.append((end - timedelta(seconds=c.get("tune_s", 0) + c.get("fit_s", 0) + c.get("serve_s", 0)), end))
    span = ""
    if spans:
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        span = f", from {first:%Y-%m-%d %H:%M} to {last:%H:%M} ({(last - first).total_seconds() / 60:.0f} min wall)"
    return [f"{MACHINE_PREFIX}{env.get('machine', '?')}; torch threads per run: {_thread_counts(cells)}",
            f"- Versions: {versions}",
            f"- Cells: {len(cells)}{span}",
            "- Compute per data set (tuning + fitting + scoring, summed over cells): " + ", ".join(
                f"{d} {s / 60:.1f} min" for d, s in wall.items()), ""]
