"""Connectors: everything that touches files, frames and databases. Imports recmaml.data, never the reverse.

    from connectors import read_interactions, write_ranked_lists
"""

from connectors.download import download_movielens
from connectors.movielens import detect_movielens, read_movielens
from connectors.readers import read_frame, read_interactions
from connectors.sql import read_sql_frame, write_sql_table
from connectors.writers import read_ranked_lists, write_ranked_lists

__all__ = [
    "detect_movielens", "download_movielens", "read_frame", "read_interactions", "read_movielens",
    "read_ranked_lists", "read_sql_frame", "write_ranked_lists", "write_sql_table",
]
