"""Run by tests/test_distributed.py under torchrun: `distributed_worker.py OUT BATCH EPOCHS` meta-trains the
tiny config on the planted log for EPOCHS epochs and saves rank 0's weights; EPOCHS = 0 saves the first
meta-batch's meta-gradient instead (a helper, not a test module)."""

import sys

import torch

from recmaml import distributed
from recmaml.config import load_config
from recmaml.meta import meta_train
from recmaml.model import Scorer, feature_tensors
from planted import taste_groups


def train(config_name: str, batch_size: int, epochs: int) -> dict:
    log = taste_groups()
    cfg = load_config(config_name).replace(
        model={"item_init": "random"}, tasks={"validation_users": 0.0},
        meta={"meta_batch_size": batch_size, "epochs": epochs, "patience": 0, "ema": 0.0})
    torch.manual_seed(cfg.meta.seed)
    model = Scorer(log.n_items, cfg.model)
    meta_train(model, log, cfg, feature_tensors(None, model.user_spec, log.n_users))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def first_meta_gradient(batch_size: int) -> dict:
    """The meta-gradient of meta_train's first meta-batch (the tiny config with its 2 gradient groups): this
    rank's groups summed over the ranks when several run, else every group in this process."""
    from recmaml.adapt import adapted_names
    from recmaml.meta import batch_gradient
    from recmaml.tasks import TaskSampler, split_users

    log = taste_groups()
    cfg = load_config("tiny").replace(model={"item_init": "random"}, tasks={"validation_users": 0.0},
                                      meta={"gradient_groups": 2})
    torch.manual_seed(cfg.meta.seed)
    model = Scorer(log.n_items, cfg.model)
    user_feats = feature_tensors(None, model.user_spec, log.n_users)
    train_users, _ = split_users(log, 0.0, cfg.meta.seed)
    batch = next(iter(TaskSampler(log, train_users, cfg.tasks, user_feats, seed=cfg.meta.seed).epoch(batch_size)))
    rank, size = distributed.rank_and_size()
    loss = batch_gradient(model, batch, cfg, adapted_names(model, cfg.meta.adapt), rank, size)
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return {**grads, "loss": torch.tensor(loss, dtype=torch.float64)}


if __name__ == "__main__":
    out, batch_size, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if distributed.launched():
        distributed.init_from_env("cpu")
    state = first_meta_gradient(batch_size) if epochs == 0 else train("tiny", batch_size, epochs)
    rank, _ = distributed.rank_and_size()
    if rank == 0:
        torch.save(state, out)
