import sys, logging, warnings, numpy as np, torch
warnings.simplefilter("ignore")
logging.basicConfig(level=logging.DEBUG, format="%(message)s")
for n in ("recmaml.meta",): logging.getLogger(n).setLevel(logging.WARNING)
from recmaml.connectors import read_ciaodvd
from recmaml.benchmark import make_splits
from recmaml import MetaRecommender
from recmaml.config import Config
from recmaml.build import resolve_for_log
from recmaml.calibrate import _ValidationTasks, fit_calibrated_priors
from recmaml.tasks import split_users
from recmaml.model import feature_tensors, FeatureSpec
log = read_ciaodvd(sys.argv[1])
sp = make_splits(log, "random", 0, [5], 0.2)
warm = sp.warm
rec = MetaRecommender(resolve_for_log(Config(), warm))
rec.model = torch.nn.Linear(1, 1)
_, val = split_users(warm, rec.config.tasks.validation_users, rec.config.meta.seed)
print("validation users", len(val), "with >5 rows", int((np.bincount(warm.user_idx, minlength=warm.n_users)[val] > 5).sum()))
tasks = _ValidationTasks(rec, warm, val, feature_tensors(None, FeatureSpec(), warm.n_users))
pr = fit_calibrated_priors(rec, warm.take(np.flatnonzero(~np.isin(warm.user_idx, val))), tasks)
print("chosen lam", float(pr.ease_lambda), "threshold", float(pr.ease_threshold), "window", float(pr.window_seconds) / 86400)
