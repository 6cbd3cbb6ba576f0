"""recmaml: meta-learned (MAML) cold-start recommendation.

    from recmaml import MetaRecommender, load_config
"""

__version__ = "0.1.0"

from recmaml.config import Config, load_config  # noqa: E402
from recmaml.data import Interactions, RankedLists, SideFeatures, Vocabulary  # noqa: E402
from recmaml.errors import CheckpointError, ConfigError, DataError, RecMamlError  # noqa: E402
from recmaml.recommender import MetaRecommender, RelevanceScoresWarning  # noqa: E402

__all__ = [
    "CheckpointError", "Config", "ConfigError", "DataError", "Interactions", "MetaRecommender",
    "RankedLists", "RecMamlError", "RelevanceScoresWarning", "SideFeatures", "Vocabulary", "load_config",
    "__version__",
]
