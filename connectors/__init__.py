"""Connectors: everything that touches files, frames and databases. Imports recmaml.data, never the reverse.

    from connectors import read_interactions, write_ranked_lists
"""

from connectors.download import download_movielens
from connectors.movielens import read_movielens
from connectors.readers import read_frame, read_interactions
from connectors.writers import write_ranked_lists

__all__ = ["download_movielens", "read_frame", "read_interactions", "read_movielens", "write_ranked_lists"]
