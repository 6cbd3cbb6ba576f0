"""recmaml: meta-learned (MAML) cold-start recommendation.

    from recmaml import MetaRecommender, load_config
"""

__version__ = "0.1.0"

from recmaml.config import Config, load_config  # noqa: E402
from recmaml.data import Interactions, RankedLists, SideFeatures, Vocabulary  # noqa: E402
from recmaml.errors import CheckpointError, ConfigError, DataError, RecMamlError  # noqa: E402

__all__ = [
    "CheckpointError", "Config", "ConfigError", "DataError", "Interactions", "MetaRecommender",
    "RankedLists", "RecMamlError", "RelevanceScoresWarning", "SideFeatures", "Vocabulary", "load_config",
    "__version__",
]


def __getattr__(name: str):
    # MetaRecommender is imported on first use (PEP 562): it brings torch (about 2.5 s), which `recmaml
    # --help`, `--version` and the light modules (config, data, errors) never need
    if name in ("MetaRecommender", "RelevanceScoresWarning"):
        from recmaml import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module 'recmaml' has no attribute {name!r}")
