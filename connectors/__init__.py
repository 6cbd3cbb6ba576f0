"""Connectors: everything that touches files, frames and databases. Imports recmaml.data, never the reverse.

    from connectors import read_interactions, write_ranked_lists
"""

from connectors.download import download_movielens
from connectors.librec import detect_librec, read_ciaodvd, read_filmtrust
from connectors.movielens import detect_movielens, read_movielens
from connectors.readers import read_frame, read_interactions, read_pairs
from connectors.sql import read_sql_frame, write_sql_table
from connectors.stream import iter_user_chunks
from connectors.features import read_side_features
from connectors.writers import RankedListsWriter, check_output, read_ranked_lists, write_frame, write_ranked_lists

__all__ = [
    "RankedListsWriter", "check_output", "detect_librec", "detect_movielens", "download_movielens", "iter_user_chunks",
    "read_ciaodvd", "read_filmtrust", "read_frame", "read_interactions", "read_movielens", "read_pairs",
    "read_ranked_lists", "read_side_features", "read_sql_frame", "write_frame", "write_ranked_lists", "write_sql_table",
]
