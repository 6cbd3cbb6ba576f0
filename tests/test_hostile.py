"""Hostile inputs, as a new user gives them: each ends in one clear line and exit 2 from the CLI (or a
recmaml error from the API), before any long work, with no output file and an existing output untouched.
The corrupt-file cases run in a subprocess, so that a reader that aborted the process would fail the test
instead of the test run."""

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recmaml import CheckpointError, DataError, Interactions, MetaRecommender
from recmaml.cli import main

GROUP = 20  # items per taste group in tests/planted.taste_groups


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def warm_csv(tmp_path_factory, taste_log):
    path = tmp_path_factory.mktemp("hostile-warm") / "warm.csv"
    pl.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids(),
                  "rating": taste_log.rating}).write_csv(path)
    return path


def fails_cleanly(argv, capsys, *needles, out=None):
    """main(argv) exits 2 with one line that contains every needle; `out`, when given, is not created, and
    a ranked-list file already there (.csv, .tsv, .parquet, .jsonl) is left byte-identical (see refused).
    Without `out`, the command's --out is checked the same way when no file or folder has its name yet."""
    if out is None and "--out" in argv and not Path(argv[argv.index("--out") + 1]).exists():
        out = Path(argv[argv.index("--out") + 1])
    if out is not None and out.suffix in (".csv", ".tsv", ".parquet", ".jsonl") and not out.exists():
        return refused(argv, capsys, out, *needles)
    return _fails_once(argv, capsys, needles, out)


def _fails_once(argv, capsys, needles, out):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert len(lines[0]) < 600, f"{len(lines[0])} characters"
    for needle in needles:
        assert needle in lines[0], lines[0]
    if out is not None:
        assert not out.exists()
    return lines[0]


OLD_OUTPUT = b"user_id,item_id,score,rank\nold,1,0.5,1\n"


def _snapshot(path):
    """The bytes of a file, or of every file in a folder, to compare before and after."""
    if path.is_dir():
        return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return path.read_bytes()


def refused(argv, capsys, out, *needles, old=None):
    """fails_cleanly twice: with no `out` (none appears), then with `out` holding an older result, made by
    old(out) (default: a small ranked-list file), which is left byte-identical with no temporary file
    beside it. Returns the error line."""
    line = _fails_once(argv, capsys, needles, out)
    (old or (lambda path: path.write_bytes(OLD_OUTPUT)))(out)
    before = _snapshot(out)
    assert _fails_once(argv, capsys, needles, None) == line
    assert _snapshot(out) == before
    assert not list(out.parent.glob(f".{out.name}.*"))
    return line


# ---- ratings that cannot be learned from ------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "1e300"])
def test_infinite_or_huge_ratings_are_refused_naming_the_row(value, model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text(f"user_id,item_id,rating\na,0,5\na,1,{value}\n")
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out",
                   str(tmp_path / "r.csv")], capsys, "infinite or too large", "data row 2", out=tmp_path / "r.csv")


def test_an_infinite_rating_in_the_warm_log_is_a_data_error_not_divergence(tmp_path, capsys):
    warm = tmp_path / "w.csv"
    warm.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},4\n" for u in range(20) for i in range(5))
                    + "3,9,inf\n")
    line = fails_cleanly(["fit", "--config", "tiny", "--data", str(warm), "--out", str(tmp_path / "m")], capsys,
                         "infinite")
    assert "inner_lr" not in line  # the data is to blame, not the hyperparameters


# ---- ids: one text id among integers, huge ids --------------------------------------------------------


def test_one_text_id_among_integer_items_keeps_the_other_rows(model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\nx,0\nx,1\nx,2\nx,abc\ny,20\ny,21\ny,22\n")
    assert main(["recommend", "--model", str(model_dir), "--history", str(history), "--k", "5",
                 "--out", str(tmp_path / "r.csv")]) == 0
    assert "1 history rows naming 1 items" in capsys.readouterr().err
    ranked = pl.read_csv(tmp_path / "r.csv")
    for user, group in (("x", 0), ("y", 1)):  # each user still got its own group, not one shared list
        assert (ranked.filter(pl.col("user_id") == user)["item_id"].to_numpy() // GROUP == group).sum() >= 4


def test_one_text_candidate_among_integer_candidates_keeps_the_others(model_dir, tmp_path, capsys):
    history, cands = tmp_path / "h.csv", tmp_path / "c.csv"
    history.write_text("user_id,item_id\nx,0\nx,1\n")
    cands.write_text("user_id,item_id\nx,3\nx,4\nx,25\nx,41\nx,7\nx,abc\n")
    assert main(["recommend", "--model", str(model_dir), "--history", str(history), "--candidates", str(cands),
                 "--k", "10", "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0
    assert sorted(pl.read_csv(tmp_path / "r.csv")["item_id"].to_list()) == [3, 4, 7, 25, 41]


def test_a_megabyte_id_is_refused_at_once(model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\na,1\nb," + "9" * 1_000_000 + "x\n")
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out", str(tmp_path / "r.csv")],
                  capsys, "1,000,001 characters", "data row 2", out=tmp_path / "r.csv")


def test_a_huge_value_in_an_error_is_shortened(tmp_path, capsys, model_dir):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id,rating\na,1," + "x" * 5_000_000 + "\n")
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out", str(tmp_path / "r.csv")],
                  capsys, "characters)", out=tmp_path / "r.csv")


# ---- corrupt Parquet ----------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "recmaml", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("damage", ["truncated", "footer length", "column chunk offset", "garbage",
                                    "negative value count"])
def test_a_corrupt_parquet_history_is_a_data_error_not_a_crash(damage, model_dir, tmp_path):
    good = tmp_path / "good.parquet"
    pl.DataFrame({"user_id": [f"u{i % 50}" for i in range(2000)], "item_id": [i % 60 for i in range(2000)],
                  "rating": [4.0] * 2000}).write_parquet(good, compression="uncompressed")
    data = bytearray(good.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "footer length":  # the 4 bytes before the trailing magic give the footer's length
        data[-8:-4] = (2**31 - 1).to_bytes(4, "little")
    elif damage == "column chunk offset":
        data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
    elif damage == "negative value count":  # the page header that made polars' page decoder abort (SIGABRT)
        import pyarrow.parquet as pq

        page = pq.ParquetFile(good).metadata.row_group(0).column(1).data_page_offset
        at = data.index(b"\x2c\x15", page) + 2  # thrift: DataPageHeader, field 1 num_values, a zigzag varint
        data[at] ^= 1  # its sign bit
    else:
        data = bytearray(b"PAR1" + bytes(range(256)) * 20 + b"PAR1")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    done = _cli("recommend", "--model", str(model_dir), "--history", str(bad), "--out", str(tmp_path / "r.csv"))
    assert done.returncode in (0, 2), done.stderr[-2000:]  # never an abort (134) or a traceback (1)
    assert "Traceback" not in done.stderr
    if done.returncode == 2:
        assert "bad.parquet" in done.stderr and not (tmp_path / "r.csv").exists()
    if damage == "negative value count":
        assert done.returncode == 2 and "negative number of values" in done.stderr, done.stderr[-2000:]
    assert not list(tmp_path.glob(".r.csv.*"))  # no temporary output left


# ---- configs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line,needle", [
    ("[meta]\nmeta_lr = -0.01", "meta.meta_lr"),
    ("[meta]\nmeta_lr = 0", "meta.meta_lr"),
    ("[meta]\nweight_decay = -1", "meta.weight_decay"),
    ("[meta]\ngrad_clip = -1", "meta.grad_clip"),
    ("[meta]\nmax_seconds = -5", "meta.max_seconds"),
    ("[meta]\nseed = -1", "meta.seed"),
    ("[meta]\nseed = 100000000000000000000", "meta.seed"),
    ("[model]\nuser_hidden = [-4]", "model.user_hidden"),
    ("[model]\nuser_hidden = [0]", "model.user_hidden"),
    ("[tasks]\nvalidation_support = 0", "tasks.validation_support"),
    ("[meta]\ndevice = \"tpu\"", "unknown device"),
    ("[meta]\nepochs = \"many\"", "meta.epochs"),
    ("[serve]\nthreads = 0", "serve.threads"),
])
def test_bad_config_values_are_one_line_before_any_work(line, needle, warm_csv, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(line + "\n")
    fails_cleanly(["fit", "--config", str(config), "--data", str(warm_csv), "--out", str(tmp_path / "m")], capsys,
                  needle, out=tmp_path / "m")


def test_a_positive_threshold_above_every_rating_is_refused(warm_csv, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[tasks]\npositive_threshold = 99\n")
    fails_cleanly(["fit", "--quiet", "--config", str(config), "--data", str(warm_csv), "--out", str(tmp_path / "m")],
                  capsys, "positive_threshold = 99", "[1, 5]", out=tmp_path / "m")


def test_an_embedding_that_cannot_fit_in_memory_is_refused_before_allocating(warm_csv, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[model]\nembedding_dim = 2000000000\n")
    fails_cleanly(["fit", "--quiet", "--config", str(config), "--data", str(warm_csv), "--out", str(tmp_path / "m")],
                  capsys, "model.embedding_dim", "GiB", out=tmp_path / "m")


# ---- model directories --------------------------------------------------------------------------------


def _copy_model(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


def _rehash(folder):
    """Recompute the weights' hash in model.json, as someone hiding a swapped file would."""
    meta = json.loads((folder / "model.json").read_text())
    meta["weights_sha256"] = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(meta))


class _Canary:
    def __reduce__(self):
        return (print, ("UNPICKLED",))


@pytest.mark.parametrize("damage,needle", [
    ("pickle", "not a readable safetensors file"),
    ("truncated", "not a readable safetensors file"),
    ("huge header", "not a readable safetensors file"),
    ("metadata list", "not the model's metadata"),
    ("user_spec", "malformed metadata"),
    ("config list", "config"),
    ("shape", "weights do not fit the saved config"),
    ("format version", "model format version 2, this recmaml reads version 1"),
    ("hash in model.json", "does not match"),
    ("weights edited", "does not match"),
])
def test_damaged_model_directories_are_one_line(damage, needle, model_dir, tmp_path, capsys):
    folder = _copy_model(model_dir, tmp_path)
    weights, meta_path = folder / "weights.safetensors", folder / "model.json"
    meta = json.loads(meta_path.read_text())
    if damage == "pickle":
        weights.write_bytes(pickle.dumps(_Canary()))
        _rehash(folder)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
        _rehash(folder)
    elif damage == "huge header":
        weights.write_bytes((2**60).to_bytes(8, "little") + b"{}")
        _rehash(folder)
    elif damage == "metadata list":
        meta_path.write_text("[1, 2, 3]")
    elif damage == "user_spec":
        meta["user_spec"] = "not a spec"
        meta_path.write_text(json.dumps(meta))
    elif damage == "config list":
        meta["config"] = [1, 2]
        meta_path.write_text(json.dumps(meta))
    elif damage == "format version":  # a model written by a future recmaml
        meta["format_version"] = 2
        meta_path.write_text(json.dumps(meta))
    elif damage == "hash in model.json":
        meta["weights_sha256"] = "0" * 64
        meta_path.write_text(json.dumps(meta))
    elif damage == "weights edited":  # one byte of one weight, hash left as it was
        raw = bytearray(weights.read_bytes())
        raw[-1] ^= 0xFF
        weights.write_bytes(bytes(raw))
    else:  # the weights of a wider model under this config
        meta["config"]["model"]["embedding_dim"] = 32
        meta_path.write_text(json.dumps(meta))
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\na,1\n")
    refused(["recommend", "--model", str(folder), "--history", str(history), "--out", str(tmp_path / "r.csv")],
            capsys, tmp_path / "r.csv", needle)
    assert "UNPICKLED" not in capsys.readouterr().out  # nothing was ever unpickled


def test_models_and_outputs_are_written_with_the_users_umask(model_dir, tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        MetaRecommender.load(model_dir).save(tmp_path / "m")
        for name in ("model.json", "weights.safetensors"):
            assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o644
    finally:
        os.umask(mask)


# ---- outputs found wrong late ----------------------------------------------------------------------


def test_outputs_that_cannot_be_written_are_found_before_the_work(model_dir, warm_csv, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\na,1\n")
    (tmp_path / "a_dir.csv").mkdir()
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out", str(tmp_path / "a_dir.csv")],
                  capsys, "is a directory")
    (tmp_path / "a_file").write_text("keep me")
    fails_cleanly(["fit", "--config", "tiny", "--data", str(warm_csv), "--out", str(tmp_path / "a_file")], capsys,
                  "a file has this name")
    fails_cleanly(["quickstart", "--out", str(tmp_path / "a_file"), "--no-download"], capsys, "a file has this name")
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_evaluate_refuses_a_nan_threshold(model_dir, tmp_path, capsys):
    history, heldout = tmp_path / "h.csv", tmp_path / "q.csv"
    history.write_text("user_id,item_id\na,1\n")
    heldout.write_text("user_id,item_id,rating\na,2,5\n")
    fails_cleanly(["evaluate", "--model", str(model_dir), "--history", str(history), "--heldout", str(heldout),
                   "--relevance-threshold", "nan"], capsys, "--relevance-threshold")


# ---- the Python API -----------------------------------------------------------------------------------


def test_api_misuse_raises_recmaml_errors(model_dir):
    import scipy.sparse as sp

    rec = MetaRecommender.load(model_dir)
    history = Interactions.from_ids(np.array(["a"]), np.array([1]))
    for k in (2.5, None, 0, True):
        with pytest.raises(DataError, match="k must be a whole number"):
            rec.recommend(history, k=k)
    with pytest.raises(DataError, match="N must be a whole number"):
        rec.recommend_arrays(sp.csr_matrix((1, len(rec.items))), N=-1)
    with pytest.raises(CheckpointError, match="a model directory is a path"):
        MetaRecommender.load(None)


# ---- inputs accepted silently before -----------------------------------------------------------------


def test_a_header_that_names_a_column_twice_is_refused(model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text("user_id,user_id,item_id\na,b,1\n")
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out", str(tmp_path / "r.csv")],
                  capsys, "more than once", out=tmp_path / "r.csv")


def test_true_false_ids_are_refused(model_dir, tmp_path, capsys):
    history = tmp_path / "h.jsonl"
    history.write_text('{"user_id": true, "item_id": 1}\n{"user_id": false, "item_id": 2}\n')
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out", str(tmp_path / "r.csv")],
                  capsys, "true/false", "--user-col", out=tmp_path / "r.csv")


def test_an_empty_table_name_is_refused(model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\na,1\n")
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out",
                   f"sqlite:///{tmp_path / 'r.db'}", "--table", ""], capsys, "--table ''")


def test_the_encoding_flag_the_hint_names_exists_and_works(model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_bytes("user_id,item_id\nJosé,1\nJosé,2\n".encode("latin-1"))
    line = fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out",
                          str(tmp_path / "r.csv")], capsys, "--encoding latin-1")
    assert "not valid utf8" in line
    assert main(["recommend", "--model", str(model_dir), "--history", str(history), "--encoding", "latin-1",
                 "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0
    assert pl.read_csv(tmp_path / "r.csv")["user_id"].unique().to_list() == ["José"]


@pytest.mark.parametrize("name,content,needle", [
    ("ragged.csv", "user_id,item_id\na,1\na,2,3,4\n", "--delimiter"),
    ("notgzip.csv.gz", "not gzip at all", "missing columns 'user_id' for the user, 'item_id'"),
    ("nul.jsonl", '{"user_id": "a\\u0000", "item_id": 1}\n', "NUL character at data row 1"),
    ("semicolons.tsv", "user_id;item_id\na;1\n", "--delimiter ';'"),
    ("badtime.csv", "user_id,item_id,timestamp\na,1,notatime\na,2,5\n", "unreadable timestamp 'notatime' at data row 1"),
])
def test_broken_text_files_are_one_line(name, content, needle, model_dir, tmp_path, capsys):
    history = tmp_path / name
    history.write_text(content)
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out", str(tmp_path / "r.csv")],
                  capsys, needle, out=tmp_path / "r.csv")


@pytest.mark.parametrize("name,content", [
    ("bom.csv", "\ufeffuser_id,item_id\na,1\na,2\n"),
    ("semicolons.csv", "user_id;item_id\na;1\na;2\n"),
])
def test_a_bom_or_another_delimiter_is_read_as_the_user_meant(name, content, model_dir, tmp_path):
    history = tmp_path / name
    history.write_text(content, encoding="utf-8")
    assert main(["recommend", "--model", str(model_dir), "--history", str(history), "--k", "3", "--out",
                 str(tmp_path / "r.csv"), "--quiet"]) == 0
    assert pl.read_csv(tmp_path / "r.csv")["user_id"].unique().to_list() == ["a"]


def test_the_delimiter_flag_the_hint_names_exists(model_dir, tmp_path):
    history = tmp_path / "pipes.txt.csv"
    history.write_text("user_id|item_id\na|1\na|2\n")
    assert main(["recommend", "--model", str(model_dir), "--history", str(history), "--delimiter", "|", "--k", "3",
                 "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0
    assert pl.read_csv(tmp_path / "r.csv").height == 3


def test_sql_table_names_that_try_to_inject_are_refused(model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\na,1\n")
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out",
                   f"sqlite:///{tmp_path / 'r.db'}", "--table", "recs; DROP TABLE x"], capsys, "invalid table name")
    assert not (tmp_path / "r.db").exists() or (tmp_path / "r.db").stat().st_size == 0


# ---- logs: Parquet columns of the wrong kind, ids out of range, broken and unreadable files ---------------


def _recommend(model_dir, history, out, *flags):
    return ["recommend", "--model", str(model_dir), "--history", str(history), "--out", str(out), *flags]


@pytest.mark.parametrize("columns,needles", [
    # header-only, with the right schema: an empty history is refused rather than answered with an empty file,
    # which would pass for success in a batch job whose upstream step wrote nothing
    ({"user_id": pl.Series([], dtype=pl.String), "item_id": pl.Series([], dtype=pl.Int64),
      "rating": pl.Series([], dtype=pl.Float64)}, ("no interactions", "empty")),
    ({"user_id": ["a", "a"], "item_id": [1, 2], "rating": ["5", "four"]},
     ("column 'rating'", "non-numeric rating 'four'", "data row 2", "--rating-col")),
    ({"user_id": ["a", "a"], "item_id": [1.0, 2.5]}, ("column 'item_id'", "non-integer id 2.5", "data row 2")),
], ids=["header only", "string ratings", "float ids"])
def test_parquet_histories_that_cannot_be_used(columns, needles, model_dir, tmp_path, capsys):
    history = tmp_path / "h.parquet"
    pl.DataFrame(columns).write_parquet(history)
    refused(_recommend(model_dir, history, tmp_path / "r.csv"), capsys, tmp_path / "r.csv", "h.parquet", *needles)


def test_parquet_numeric_text_ratings_and_whole_float_ids_are_read_as_meant(model_dir, tmp_path):
    history = tmp_path / "h.parquet"
    pl.DataFrame({"user_id": ["a", "a"], "item_id": [1.0, 2.0], "rating": ["5", " 4 "]}).write_parquet(history)
    assert main(_recommend(model_dir, history, tmp_path / "r.csv", "--k", "5", "--quiet")) == 0
    ranked = pl.read_csv(tmp_path / "r.csv")
    assert ranked.height == 5 and not set(ranked["item_id"].to_list()) & {1, 2}  # 1.0 and 2.0 are items 1 and 2


@pytest.mark.parametrize("name,content,column,value", [
    ("users.csv", f"user_id,item_id\n{2**63},1\n{2**63},2\n", "user_id", str(2**63)),
    ("items.csv", f"user_id,item_id\na,1\na,{-2**63 - 1}\n", "item_id", str(-2**63 - 1)),
    ("hashes.parquet", pl.DataFrame({"user_id": pl.Series([5, 2**64 - 1], dtype=pl.UInt64), "item_id": [1, 2]}),
     "user_id", str(2**64 - 1)),
])
def test_ids_beyond_64_bits_are_refused_naming_the_value(name, content, column, value, model_dir, tmp_path, capsys):
    history = tmp_path / name
    if isinstance(content, str):
        history.write_text(content)
    else:
        content.write_parquet(history)
    line = refused(_recommend(model_dir, history, tmp_path / "r.csv"), capsys, tmp_path / "r.csv",
                   name, f"column {column!r}", value, "64-bit", "as text")
    assert "delimiter" not in line and "not a valid Parquet" not in line  # the file is fine; the id is not


def test_negative_ids_are_ordinary_ids(model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\n-5,1\n-5,-2\n")  # the model knows items 0..59: -2 is an unknown item
    assert main(_recommend(model_dir, history, tmp_path / "r.csv", "--k", "3")) == 0
    assert "dropped 1 history rows naming 1 items" in capsys.readouterr().err
    ranked = pl.read_csv(tmp_path / "r.csv")
    assert ranked["user_id"].to_list() == [-5, -5, -5] and 1 not in ranked["item_id"].to_list()


def _no_root_powers(path):
    """A command prefix under which `path` (chmod 000) cannot be read: none for a plain user; for root (CI
    runs the tests as root), setpriv without the capabilities that bypass file permissions. None when
    neither makes the file unreadable here."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        return None  # no setpriv, or it may not drop them (e.g. a container without CAP_SETPCAP)
    if subprocess.run([*prefix, "cat", str(path)], capture_output=True).returncode == 0:
        return None
    return prefix


@pytest.mark.parametrize("name", ["h.csv", "h.parquet", "h.jsonl"])
def test_an_unreadable_history_names_its_permissions(name, model_dir, tmp_path):
    history, out = tmp_path / name, tmp_path / "r.csv"
    frame = pl.DataFrame({"user_id": ["a", "a"], "item_id": [1, 2]})
    {"h.csv": frame.write_csv, "h.parquet": frame.write_parquet, "h.jsonl": frame.write_ndjson}[name](history)
    history.chmod(0)
    prefix = _no_root_powers(history)
    if prefix is None:
        pytest.skip("root, and setpriv cannot drop the capabilities that bypass file permissions here")
    out.write_bytes(OLD_OUTPUT)
    done = subprocess.run([*prefix, sys.executable, "-m", "recmaml", *_recommend(model_dir, history, out)],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert name in lines[0] and "cannot read the file" in lines[0] and "permissions" in lines[0], lines[0]
    assert "truncated" not in lines[0]  # not blamed on the file's bytes
    assert out.read_bytes() == OLD_OUTPUT and not list(tmp_path.glob(".r.csv.*"))


def test_json_lines_broken_mid_way_names_the_line(model_dir, tmp_path, capsys):
    history = tmp_path / "h.jsonl"
    good = "".join(json.dumps({"user_id": f"u{i % 50}", "item_id": i % 60}) + "\n" for i in range(20_000))
    history.write_text(good + '{"user_id": "u1", "item_id": \n' + '{"user_id": "u2", "item_id": 3}\n')
    refused(_recommend(model_dir, history, tmp_path / "r.csv"), capsys, tmp_path / "r.csv",
            "h.jsonl", "not valid JSON Lines at line 20,001", "one JSON object")


def test_a_user_left_without_known_rows_is_ranked_from_the_start_with_a_warning(model_dir, tmp_path, capsys):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\na,1\na,2\nb,9999\nb,8888\n")
    assert main(_recommend(model_dir, history, tmp_path / "r.csv", "--k", "4")) == 0
    assert "dropped 2 history rows naming 2 items the model does not know" in capsys.readouterr().err
    ranked = pl.read_csv(tmp_path / "r.csv")
    # b is served like a new user (the meta-learned start), not dropped and not an error for the whole batch
    assert ranked.filter(pl.col("user_id") == "b")["rank"].to_list() == [1, 2, 3, 4]


# ---- models used for the other objective --------------------------------------------------------------


@pytest.fixture(scope="module")
def rating_model_dir(tmp_path_factory, taste_log, tiny_config):
    path = tmp_path_factory.mktemp("hostile-rating") / "model"
    MetaRecommender(tiny_config.replace(model={"objective": "rating"})).fit(taste_log).save(path)
    return path


def test_a_rating_model_ranks_by_predicted_rating(rating_model_dir, tmp_path):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id,rating\na,1,5\na,2,4\n")
    assert main(_recommend(rating_model_dir, history, tmp_path / "r.csv", "--k", "5", "--quiet")) == 0
    ranked = pl.read_csv(tmp_path / "r.csv")  # documented: rankings use the (unclipped) predicted ratings
    assert ranked["rank"].to_list() == [1, 2, 3, 4, 5] and ranked["score"].is_sorted(descending=True)
    assert ranked["score"].min() > 1  # ratings on the warm log's scale, not logits


def _predict(model_dir, history, pairs, out):
    return ["predict", "--model", str(model_dir), "--history", str(history), "--pairs", str(pairs), "--out", str(out)]


def test_a_ranking_model_predicts_scores_and_says_they_are_not_ratings(model_dir, tmp_path, capsys):
    history, pairs = tmp_path / "h.csv", tmp_path / "pairs.csv"
    history.write_text("user_id,item_id\na,1\na,2\n")
    pairs.write_text("user_id,item_id\na,5\na,45\n")
    assert main(_predict(model_dir, history, pairs, tmp_path / "p.csv")) == 0
    err = capsys.readouterr().err
    assert err.count("ranking model (objective 'implicit')") == 1  # the note; the API's warning is not repeated
    assert pl.read_csv(tmp_path / "p.csv")["prediction"].is_finite().all()


# ---- outputs: SQL names, candidates and pairs ----------------------------------------------------------


def _database_with_a_table_x(path):
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE x (keep INTEGER)")
        db.execute("INSERT INTO x VALUES (42)")
    db.close()


@pytest.mark.parametrize("table", ["recs; DROP TABLE x", 'x"; DROP TABLE x; --', "main.x; --"])
def test_sql_table_names_that_inject_leave_the_database_byte_identical(table, model_dir, tmp_path, capsys):
    pytest.importorskip("adbc_driver_sqlite")
    history, db = tmp_path / "h.csv", tmp_path / "r.db"
    history.write_text("user_id,item_id\na,1\n")
    refused(_recommend(model_dir, history, f"sqlite:///{db}", "--table", table), capsys, db,
            "invalid table name", old=_database_with_a_table_x)


def test_sql_column_names_never_reach_the_output_database(model_dir, tmp_path):
    pytest.importorskip("adbc_driver_sqlite")
    import sqlite3

    history, db = tmp_path / "h.csv", tmp_path / "r.db"
    history.write_text('"u; DROP TABLE x",item_id\na,1\na,2\n')
    _database_with_a_table_x(db)
    assert main(_recommend(model_dir, history, f"sqlite:///{db}", "--user-col", "u; DROP TABLE x",
                           "--table", "recs", "--k", "3", "--quiet")) == 0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT keep FROM x").fetchall() == [(42,)]
        assert [c[1] for c in con.execute("PRAGMA table_info(recs)")] == ["user_id", "item_id", "score", "rank"]
        assert con.execute("SELECT COUNT(*) FROM recs").fetchone() == (3,)
    con.close()


def test_candidates_naming_unknown_users_or_items(model_dir, tmp_path, capsys):
    history, cands = tmp_path / "h.csv", tmp_path / "c.csv"
    history.write_text("user_id,item_id\na,1\na,2\n")
    cands.write_text("user_id,item_id\na,7\na,99999\nnew,5\n")
    assert main(_recommend(model_dir, history, tmp_path / "r.csv", "--candidates", str(cands))) == 0
    assert "dropped 1 candidate rows naming 1 items the model does not know" in capsys.readouterr().err
    ranked = pl.read_csv(tmp_path / "r.csv")  # an unknown item is dropped; a user without history still ranked
    assert sorted(zip(ranked["user_id"], ranked["item_id"])) == [("a", 7), ("new", 5)]


def test_pairs_naming_unknown_users_or_items(model_dir, tmp_path, capsys):
    history, pairs = tmp_path / "h.csv", tmp_path / "pairs.csv"
    history.write_text("user_id,item_id\na,1\na,2\n")
    pairs.write_text("user_id,item_id\nnew,5\na,99999\n")
    assert main(_predict(model_dir, history, pairs, tmp_path / "p.csv")) == 0
    assert "1 pairs name items the model does not know; their prediction is NaN" in capsys.readouterr().err
    pred = pl.read_csv(tmp_path / "p.csv")["prediction"]
    assert pred.is_finite()[0] and pred.is_nan()[1]  # kept in place, one row per pair


@pytest.mark.parametrize("content,needle", [("", "the file is empty (0 bytes)"),
                                            ("user_id,item_id\n", "no interactions")])
def test_an_empty_candidates_file_is_refused(content, needle, model_dir, tmp_path, capsys):
    history, cands = tmp_path / "h.csv", tmp_path / "c.csv"
    history.write_text("user_id,item_id\na,1\n")
    cands.write_text(content)
    refused(_recommend(model_dir, history, tmp_path / "r.csv", "--candidates", str(cands)), capsys,
            tmp_path / "r.csv", "c.csv", needle)


def test_k_larger_than_the_catalog_returns_the_whole_catalog(model_dir, tmp_path):
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\na,1\na,2\n")
    n_items = len(MetaRecommender.load(model_dir).items)
    assert main(_recommend(model_dir, history, tmp_path / "r.csv", "--k", "1000000", "--quiet")) == 0
    ranked = pl.read_csv(tmp_path / "r.csv")
    assert ranked.height == n_items - 2 and ranked["item_id"].n_unique() == n_items - 2  # all but the seen two
    assert ranked["rank"].to_list() == list(range(1, n_items - 1))


# ---- configs the TOML reader cannot take ----------------------------------------------------------------


@pytest.mark.parametrize("make,needle", [
    (lambda path: path.mkdir(), "is a folder; pass the TOML file itself"),
    (lambda path: path.write_text("[meta\nepochs = 2\n"), "not valid TOML"),
], ids=["directory", "syntax error"])
def test_configs_that_are_not_a_toml_file(make, needle, model_dir, warm_csv, tmp_path, capsys):
    config = tmp_path / "c.toml"
    make(config)
    refused(["fit", "--config", str(config), "--data", str(warm_csv), "--out", str(tmp_path / "m")], capsys,
            tmp_path / "m", "c.toml", needle, old=lambda path: shutil.copytree(model_dir, path))


@pytest.mark.parametrize("history,model,needle", [
    ([1, 2], ["m1", "m2"], "the model's ids carry the prefix 'm' and the history's are bare numbers"),
    (["m1", "m2"], [1, 2], "the history's ids carry the prefix 'm' and the model's are bare numbers"),
    (["a1"], ["b2"], "the history's ids carry the prefix 'a', the model's 'b'"),
    ([5, 6], [7, 8], "the item column is another column"),
])
def test_the_likely_cause_of_mismatched_ids_is_named(history, model, needle):
    from recmaml.item_match import likely_cause

    assert needle in likely_cause(history, model)


@pytest.mark.parametrize("row", ['"b' + "y" * 1_000_000 + ",2", "b,2," + "y" * 1_000_000, "b,2\x00" + "y" * 1_000_000])
def test_a_library_error_quoting_a_huge_field_is_cut(row, tmp_path, capsys, model_dir):
    """polars' parse errors may quote the offending field whole: the message recmaml prints stays short."""
    history = tmp_path / "h.csv"
    history.write_text("user_id,item_id\na,1\n" + row + "\n")
    fails_cleanly(["recommend", "--model", str(model_dir), "--history", str(history), "--out", str(tmp_path / "r.csv")],
                  capsys, "h.csv")
