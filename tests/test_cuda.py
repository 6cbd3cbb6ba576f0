"""The same code on a CUDA device (meta.device = 'cuda'); skipped where no GPU is present."""

import numpy as np
import pytest
import torch

from recmaml import Interactions, MetaRecommender

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def history():
    return Interactions.from_ids(np.array(["a"] * 3 + ["b"] * 3), np.array([0, 1, 2, 20, 21, 22]),
                                 rating=np.full(6, 5.0))


@pytest.mark.parametrize("adapt", ["user+head", "all"])  # the serving fast path, and the vmap path
def test_fit_and_serve_on_cuda_match_the_cpu(taste_log, tiny_config, tmp_path, adapt):
    cfg = tiny_config.replace(meta={"device": "cuda", "adapt": adapt})
    rec = MetaRecommender(cfg).fit(taste_log)
    assert all(p.is_cuda for p in rec.model.parameters())
    on_gpu = rec.recommend(history(), k=5)
    tops = on_gpu.to_pandas()
    assert (tops[tops.user_id == "a"].item_id // 20 == 0).sum() >= 4
    assert (tops[tops.user_id == "b"].item_id // 20 == 1).sum() >= 4

    rec.save(tmp_path / "model")
    on_cpu = MetaRecommender.load(tmp_path / "model", device="cpu").recommend(history(), k=5)
    assert np.array_equal(on_cpu.item_id, on_gpu.item_id)
    np.testing.assert_allclose(on_cpu.score, on_gpu.score, rtol=1e-4, atol=1e-4)
    cands = Interactions.from_ids(np.array(["a", "a", "b"]), np.array([5, 45, 30]))
    assert len(rec.recommend(history(), k=5, candidates=cands)) == 3
    assert np.isfinite(rec.predict(history(), ["a", "b"], [5, 30])).all()
