"""Fuzz the log readers: mutated CSV, TSV, JSON Lines and Parquet files through read_interactions.

    .venv/bin/python benchmarks/fuzz_readers.py --seconds 60            # each format, in its own process
    .venv/bin/python benchmarks/fuzz_readers.py --formats parquet --seconds 300 --keep crashes/

Each format's seed file is a small valid log (string users, integer items, ratings, timestamps). Every
execution applies 1 to 8 random mutations to it (flip, overwrite, insert or delete bytes, truncate,
duplicate a slice) and reads the result. Target: no exception other than recmaml's DataError (the
documented error of a bad input), and no process abort. A format runs in a child process, so an abort
(a Rust panic that kills the process, a segfault) is counted as a crash of its own and the run goes on.
Prints executions, DataErrors and crashes per format; --keep writes each crashing input to a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("csv", "tsv", "jsonl", "parquet")


def seed_bytes(fmt: str) -> bytes:
    rows = [(f"u{u}", i, 1 + (u * i) % 5, 1_600_000_000 + u * 100 + i) for u in range(12) for i in range(u % 5 + 1)]
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        lines = [sep.join(("user_id", "item_id", "rating", "timestamp"))] + [sep.join(map(str, r)) for r in rows]
        return ("\n".join(lines) + "\n").encode()
    if fmt == "jsonl":
        keys = ("user_id", "item_id", "rating", "timestamp")
        return "".join(json.dumps(dict(zip(keys, r))) + "\n" for r in rows).encode()
    import io

    import polars as pl

    buffer = io.BytesIO()
    pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row").write_parquet(buffer)
    return buffer.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            out = bytearray(rng.randbytes(rng.randint(1, 16)))
        op = rng.randrange(6)
        pos = rng.randrange(len(out))
        if op == 0:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos:pos + 4] = rng.randbytes(4)
        elif op == 2:
            out[pos:pos] = rng.choice([rng.randbytes(rng.randint(1, 8)), b",", b"\n", b'"', b"\x00", b"{", b"PAR1"])
        elif op == 3:
            del out[pos:pos + rng.randint(1, 16)]
        elif op == 4:
            del out[rng.randrange(len(out)):]
        else:
            start = rng.randrange(len(out))
            out[pos:pos] = out[start:start + rng.randint(1, 64)]
    return bytes(out)


def fuzz_one_format(fmt: str, seconds: float, seed: int, keep: Path | None) -> dict:
    """In this process: mutate and read until the time is up; count outcomes."""
    import warnings

    from recmaml.connectors import read_interactions
    from recmaml.errors import DataError

    warnings.simplefilter("ignore")
    rng = random.Random(seed)
    base = seed_bytes(fmt)
    counts = {"format": fmt, "executions": 0, "read": 0, "data_errors": 0, "crashes": 0, "crash_types": {}}
    folder = Path(tempfile.mkdtemp(prefix="recmaml-fuzz-"))
    path = folder / f"input.{fmt}"
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        data = mutate(base, rng)
        path.write_bytes(data)
        if keep is not None:  # the input in flight: what an abort leaves behind for the parent to keep
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{fmt}-in-flight.{fmt}").write_bytes(data)
        counts["executions"] += 1
        try:
            read_interactions(path)
            counts["read"] += 1
        except DataError:
            counts["data_errors"] += 1
        except BaseException as err:  # noqa: BLE001 (what the fuzzer is looking for; PanicException included)
            if isinstance(err, KeyboardInterrupt):
                raise
            counts["crashes"] += 1
            name = type(err).__name__
            counts["crash_types"][name] = counts["crash_types"].get(name, 0) + 1
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{fmt}-{counts['crashes']}.{fmt}").write_bytes(data)
                (keep / f"{fmt}-{counts['crashes']}.txt").write_text(traceback.format_exc())
    return counts


def run_format(fmt: str, seconds: float, seed: int, keep: Path | None) -> dict:
    """The format in a child process; a child that dies counts as an abort and is restarted."""
    result = {"format": fmt, "executions": 0, "read": 0, "data_errors": 0, "crashes": 0, "crash_types": {},
              "aborts": 0}
    deadline = time.perf_counter() + seconds
    attempt = 0
    while (left := deadline - time.perf_counter()) > 1:
        cmd = [sys.executable, __file__, "--child", fmt, "--seconds", str(left), "--seed", str(seed + attempt)]
        if keep is not None:
            cmd += ["--keep", str(keep)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        attempt += 1
        if done.returncode != 0:
            result["aborts"] += 1
            if keep is not None and (keep / f"{fmt}-in-flight.{fmt}").exists():
                (keep / f"{fmt}-in-flight.{fmt}").rename(keep / f"{fmt}-abort-{result['aborts']}.{fmt}")
                (keep / f"{fmt}-abort-{result['aborts']}.txt").write_text(done.stderr[-5000:])
            continue
        child = json.loads(done.stdout.strip().splitlines()[-1])
        for key in ("executions", "read", "data_errors", "crashes"):
            result[key] += child[key]
        for name, n in child["crash_types"].items():
            result["crash_types"][name] = result["crash_types"].get(name, 0) + n
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--seconds", type=float, default=60.0, help="per format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="write crashing inputs and tracebacks here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=FORMATS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(fuzz_one_format(args.child, args.seconds, args.seed, args.keep)))
        return 0
    results = [run_format(fmt, args.seconds, args.seed, args.keep) for fmt in args.formats]
    print(f"{'format':<9}{'executions':>11}{'read':>8}{'DataError':>11}{'crashes':>9}{'aborts':>8}  crash types")
    for r in results:
        print(f"{r['format']:<9}{r['executions']:>11,}{r['read']:>8,}{r['data_errors']:>11,}{r['crashes']:>9,}"
              f"{r['aborts']:>8,}  {r['crash_types'] or '-'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any(r["crashes"] or r["aborts"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
