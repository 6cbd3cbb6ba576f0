"""On the benchmark's own split (kshot_split, CiaoDVD, K=5): EASE baseline vs the priors alone."""
import sys, warnings, numpy as np, torch
warnings.simplefilter("ignore")
from recmaml.connectors import read_ciaodvd
from recmaml.benchmark import make_splits, user_times
from recmaml.protocol import evaluate_ranking
from recmaml.baselines import EASE, RecentPopularity
from recmaml.priors import fit_priors, ease_table, standardized
from recmaml.data import relevant_rating
log = read_ciaodvd(sys.argv[1]); thr = relevant_rating(log.rating); ethr = None if len(sys.argv) > 4 else thr
prot = sys.argv[2]; seed = int(sys.argv[3])
sp = make_splits(log, prot, seed, [1, 5], 0.2)
for K in (1, 5):
    split = sp.test[K]; sup = split.cold_support
    from recmaml.benchmark import ranking_cell
    def ev(s): return round(ranking_cell(np.asarray(s, np.float32), split, thr, full=False)["ndcg@20"], 4)
    e = EASE(lam=500.0, threshold=ethr).fit(split.warm)
    base = e.score(sup.user_idx, sup.item_idx, split.n_cold, sup.rating)
    pr = fit_priors(split.warm, ethr, 500.0).with_window(365.0)
    S = max(np.bincount(sup.user_idx, minlength=split.n_cold).max(), 1)
    items = torch.zeros(split.n_cold, S, dtype=torch.long); mask = torch.zeros(split.n_cold, S)
    pos = np.zeros(split.n_cold, int)
    for u, i, rt in zip(sup.user_idx, sup.item_idx, sup.rating):
        items[u, pos[u]] = int(i); mask[u, pos[u]] = float(ethr is None or rt >= ethr); pos[u] += 1
    z = pr.ease(items, mask, torch.full_like(mask, float("nan")))
    rec = pr.recent(torch.as_tensor(user_times(split)))
    zb = standardized(torch.as_tensor(base))
    print(prot, seed, "K", K, "EASE base", ev(base), "z(base)+.25 recent", ev(zb + 0.25 * rec), "prior ease", ev(z), "ease+.25rec", ev(z + 0.25 * rec),
          "ease+1rec", ev(z + rec), "recent", ev(rec))
print({K: sp.test[K].n_cold for K in (1, 5)}, log)
