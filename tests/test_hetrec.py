"""The HetRec 2011 Last.fm reader: a tiny file in the original layout (tab-separated, header, CRLF) for
the parser, detection and errors, the real file from ../shared/data (counts from its README.md), and the
benchmark's handling of a log of plays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT
from recmaml.connectors import read_interactions
from recmaml.connectors.hetrec import detect_hetrec, read_lastfm
from recmaml.errors import DataError

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _write(folder: Path, rows: list[str], header: str = "userID\tartistID\tweight") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "user_artists.dat").write_bytes("\r\n".join([header, *rows, ""]).encode())
    (folder / "artists.dat").write_text("id\tname\turl\tpictureURL\n")
    return folder


@pytest.fixture
def lastfm_dir(tmp_path) -> Path:
    return _write(tmp_path / "lastfm", ["2\t51\t13883", "2\t52\t11690", "3\t51\t1", "4\t60\t250"])


def test_plays_are_read_as_counts_without_timestamps(lastfm_dir):
    got = read_lastfm(lastfm_dir)
    assert (len(got), got.n_users, got.n_items) == (4, 3, 3)
    assert got.timestamp is None
    rows = (got.user_ids() == 2) & (got.item_ids() == 52)
    assert got.rating[rows].tolist() == [11690.0]


def test_the_folder_and_its_file_are_recognised(lastfm_dir, tmp_path):
    assert detect_hetrec(lastfm_dir) == "lastfm" == detect_hetrec(lastfm_dir / "user_artists.dat")
    assert detect_hetrec(lastfm_dir / "artists.dat") is None and detect_hetrec(tmp_path) is None
    for source in (lastfm_dir, lastfm_dir / "user_artists.dat"):
        assert len(read_interactions(source)) == 4
    assert len(read_interactions(lastfm_dir, format="lastfm")) == 4


@pytest.mark.parametrize("rows, header, match", [
    (["2\t51\t13883"], "user\titem\tplays", "line 1 should be the header"),
    (["2\t51\t13883", "2\tx\t5"], "userID\tartistID\tweight", "line 3: artistID 'x' is not an artist id"),
    (["2\t51\t0"], "userID\tartistID\tweight", "line 2: a play count"),
    (["2\t51"], "userID\tartistID\tweight", "line 2 has 2 fields, expected 3"),
    ([], "userID\tartistID\tweight", "no play rows under the header"),
])
def test_bad_files_name_the_line_and_the_fix(tmp_path, rows, header, match):
    folder = _write(tmp_path / "bad", rows, header)
    with pytest.raises(DataError, match=match):
        read_lastfm(folder)


def test_a_folder_without_the_plays_says_what_it_holds(tmp_path):
    folder = tmp_path / "lastfm"
    folder.mkdir()
    (folder / "tags.dat").write_text("tagID\ttagValue\n")
    with pytest.raises(DataError, match=r"missing user_artists.dat.*\['tags.dat'\]"):
        read_lastfm(folder)


def test_the_benchmark_leaves_the_rating_scale_out_of_a_log_of_plays(lastfm_dir, tmp_path):
    from recmaml.benchmark import BenchmarkSpec, has_rating_scale, run_benchmark
    from recmaml.synthetic import clustered_interactions

    plays = read_lastfm(_write(tmp_path / "many", [f"{u}\t{i}\t{int(1.5 ** ((u * 31 + i * 17) % 30)) + 1}"
                                                   for u in range(40) for i in range(u % 7, 60, 3)]))
    assert not has_rating_scale(plays) and has_rating_scale(clustered_interactions(30, 20, seed=0))
    with pytest.raises(DataError, match="counts \\(plays\\), not ratings"):
        run_benchmark(plays, BenchmarkSpec(name="plays", protocols=("melu",), ks=(3,), seeds=(0,),
                                           systems=("popularity",)), tmp_path / "out")
    paths = run_benchmark(plays, BenchmarkSpec(name="plays", protocols=("random",), ks=(3,), seeds=(0,),
                                               systems=("popularity", "item_mean"), grid="minimal"), tmp_path / "out")
    assert [p.stem for p in paths] == ["popularity"]  # item means rank by average plays: left out


def test_shared_lastfm():
    folder = SHARED_DATA / "lastfm-hetrec2011"
    if not folder.is_dir():
        pytest.skip(f"lastfm-hetrec2011 not found at {folder} (CI provides ../shared/data next to the repository)")
    got = read_interactions(folder)
    assert (len(got), got.n_users, got.n_items) == (92_834, 1_892, 17_632)
    assert (got.rating.min(), got.rating.max()) == (1.0, 352_698.0)
    assert np.all(got.rating == np.round(got.rating)) and got.timestamp is None
