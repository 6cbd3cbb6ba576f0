"""ab.py with two variants: 'new' (this checkout's calibrate) and 'equal' (the same, but each prior's weight
curve chosen on the mean of the history sizes' validation nDCG@20, each size alike, instead of the sum
weighted by their users).

    PYTHONPATH=. python benchmarks/recipes/calibration/ab_equal.py --data ml-100k,filmtrust --seeds 0,1,2 \
        --old HEAD --out runs/equal-ab
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[2]))

import ab  # noqa: E402
from recmaml import calibrate as new_calibrate  # noqa: E402

USERS_WEIGHTED = "users[b] * values[b][curve[b - 1]]"


def equal_sizes_calibrate():
    """calibrate.calibrate with the curve's total over sizes unweighted (a copy of the module, one line changed)."""
    source = Path(new_calibrate.__file__).read_text()
    if USERS_WEIGHTED not in source:
        raise SystemExit(f"calibrate.py no longer sums {USERS_WEIGHTED!r}; update this recipe")
    path = Path(tempfile.mkdtemp()) / "calibrate_equal.py"
    path.write_text(source.replace(USERS_WEIGHTED, "values[b][curve[b - 1]]"))
    spec = importlib.util.spec_from_file_location("calibrate_equal", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.calibrate


if __name__ == "__main__":
    ab.variants = lambda old: {"new": new_calibrate.calibrate, "equal": equal_sizes_calibrate()}
    ab.main()
