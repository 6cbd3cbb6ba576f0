"""Connectors: everything that touches files, frames and databases. Imports recmaml.data, never the reverse.

    from recmaml.connectors import read_interactions, write_ranked_lists
"""

from recmaml.connectors.download import download_movielens
from recmaml.connectors.hetrec import detect_hetrec, read_lastfm
from recmaml.connectors.librec import detect_librec, read_ciaodvd, read_filmtrust
from recmaml.connectors.movielens import detect_movielens, read_movielens, read_movielens_items
from recmaml.connectors.readers import read_frame, read_interactions, read_pairs
from recmaml.connectors.sql import read_sql_frame, write_sql_table
from recmaml.connectors.stream import iter_user_chunks
from recmaml.connectors.features import read_side_features
from recmaml.connectors.writers import RankedListsWriter, check_output, read_ranked_lists, write_frame, write_ranked_lists

__all__ = [
    "RankedListsWriter", "check_output", "detect_hetrec", "detect_librec", "detect_movielens", "download_movielens",
    "iter_user_chunks", "read_ciaodvd", "read_filmtrust", "read_frame", "read_interactions", "read_lastfm",
    "read_movielens", "read_movielens_items",
    "read_pairs",
    "read_ranked_lists", "read_side_features", "read_sql_frame", "write_frame", "write_ranked_lists", "write_sql_table",
]
