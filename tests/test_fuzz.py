"""A bounded fuzzing run of the log readers (benchmarks/fuzz_readers.py): mutated files end in a DataError
or a log, never in another exception. Marked slow (40 s): `pytest -m slow tests/test_fuzz.py`."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fuzz_readers import run_format  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_mutated_logs_end_in_a_data_error_or_a_log(fmt):
    result = run_format(fmt, seconds=10.0, seed=1, keep=None)
    assert result["executions"] > 100
    assert result["crashes"] == 0, result["crash_types"]
    assert result["aborts"] == 0  # Parquet pages are decoded by pyarrow, whose errors are exceptions
