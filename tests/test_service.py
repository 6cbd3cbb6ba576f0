"""`recmaml serve` over real HTTP: a server on a free port, an httpx client. Lists equal the library's
(alone and under concurrent requests, which the service batches), reload under load, a damaged model
refused, bad requests answered 4xx with the field and the fix, and SIGTERM finishing requests in flight.
Who may reload: off without a token, 401 without the right one, only folders under the reload root, and
no answer that tells a client about the server's folders. One access-log line per request."""

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from recmaml import MetaRecommender  # noqa: E402
from recmaml.service import MAX_BODY_BYTES, MAX_HISTORY, MAX_K, Batcher, create_app  # noqa: E402
from rankings import assert_close_scores, assert_same_ranking  # noqa: E402

TOKEN = "test-reload-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class Server:
    """uvicorn serving `app` on a free port of 127.0.0.1, in a thread (no signal handlers there)."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.1)  # each poll is an access-log line in the server's piped stderr: few of them
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        return self

    def __exit__(self, *exc):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_model_dir, taste_log, tiny_config):
    """The session's tiny model and a second one (another seed), each in its own folder."""
    root = tmp_path_factory.mktemp("served")
    first = root / "first"
    shutil.copytree(tiny_model_dir, first)
    second = root / "second"
    MetaRecommender(tiny_config.replace(meta={"seed": 7})).fit(taste_log).save(second)
    return first, second


@pytest.fixture(scope="module")
def served(model_dirs):
    with Server(create_app(model_dirs[0])) as server:
        yield server


def _users(taste_log, n: int, per_user: int = 5) -> list[dict]:
    """n request users: the first `per_user` rows of taste_log's users 0..n-1, as JSON."""
    out = []
    for user in range(n):
        rows = np.flatnonzero(taste_log.user_idx == user)[:per_user]
        out.append({"user_id": f"u{user}", "items": taste_log.items.lookup(taste_log.item_idx[rows]).tolist(),
                    "ratings": taste_log.rating[rows].tolist(), "timestamps": taste_log.timestamp[rows].tolist()})
    return out


def _library(rec: MetaRecommender, user: dict, k: int, **kw):
    return rec.recommend_user(user["items"], user["ratings"], user["timestamps"], k=k, **kw)


def test_lists_equal_the_librarys(served, model_dirs, taste_log):
    rec = MetaRecommender.load(model_dirs[0])
    users = _users(taste_log, 6)
    answer = served.client.post("/recommend", json={"users": users, "k": 7})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == json.loads((model_dirs[0] / "model.json").read_text())["weights_sha256"]
    for user, result in zip(users, body["results"]):
        expected = _library(rec, user, 7)
        assert result["user_id"] == user["user_id"]
        assert_same_ranking(result["items"], result["scores"], expected.items, expected.scores)
        assert result["ranks"] == list(range(1, 8)) and result["unknown_items"] == 0
    # the batch path on a frame gives the same lists
    frame = {"user_id": np.repeat([u["user_id"] for u in users], 5), "item_id": np.concatenate([u["items"] for u in users]),
             "rating": np.concatenate([u["ratings"] for u in users]), "timestamp": np.concatenate([u["timestamps"] for u in users])}
    import pandas as pd

    batch = rec.recommend(pd.DataFrame(frame), k=7)
    for user, result in zip(users, body["results"]):
        expected = batch[batch.user_id == user["user_id"]].sort_values("rank")
        assert_same_ranking(result["items"], result["scores"], expected.item_id, expected.score)


def test_concurrent_requests_are_batched_and_answered_as_alone(served, model_dirs, taste_log):
    rec = MetaRecommender.load(model_dirs[0])
    users = _users(taste_log, 48)
    candidates = {3: [0, 1, 2, 40, 41], 7: [10, 11, 12]}
    for i, items in candidates.items():
        users[i] = {**users[i], "candidates": items}

    def ask(i):
        exclude = i % 5 != 0
        k = 3 + i % 4
        with httpx.Client(base_url=str(served.client.base_url), timeout=30) as client:
            r = client.post("/recommend", json={"users": [users[i]], "k": k, "exclude_seen": exclude})
        return i, k, exclude, r

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(len(users))))
    for i, k, exclude, r in answers:
        assert r.status_code == 200, r.text
        expected = _library(rec, users[i], k, exclude_seen=exclude, candidates=users[i].get("candidates"))
        result = r.json()["results"][0]
        assert_same_ranking(result["items"], result["scores"], expected.items, expected.scores)


def test_predict_equals_the_librarys(served, model_dirs, taste_log):
    rec = MetaRecommender.load(model_dirs[0])
    user = _users(taste_log, 1)[0]
    items = [0, 5, 33, 999999]
    r = served.client.post("/predict", json={"users": [{**user, "score_items": items}]})
    assert r.status_code == 200, r.text
    import pandas as pd

    history = pd.DataFrame({"user_id": user["user_id"], "item_id": user["items"], "rating": user["ratings"],
                            "timestamp": user["timestamps"]})
    expected = rec.predict(history, np.full(len(items), user["user_id"]), np.array(items))
    scores = r.json()["results"][0]["scores"]
    assert scores[-1] is None  # an unknown item
    assert_close_scores(scores[:-1], expected[:-1])


def test_health_and_model(served, model_dirs):
    health = served.client.get("/health").json()
    assert health["status"] == "ok" and health["in_flight"] == 1  # itself
    answer = served.client.get("/model")
    info = answer.json()
    saved = json.loads((model_dirs[0] / "model.json").read_text())
    assert info["weights_sha256"] == saved["weights_sha256"] and info["name"] == model_dirs[0].name
    assert info["recmaml_version"] == saved["recmaml_version"]
    assert "path" not in info and str(model_dirs[0].parent) not in answer.text  # the server's folders are its own
    assert info["items"] == len(MetaRecommender.load(model_dirs[0]).items)
    assert info["objective"] == "implicit" and info["config"]["model"]["objective"] == "implicit"
    schema = served.client.get("/openapi.json").json()
    assert {"/recommend", "/predict", "/health", "/model", "/reload"} <= set(schema["paths"])


@pytest.mark.parametrize("body, status, field", [
    ({}, 422, "users"),
    ({"users": []}, 422, "users"),
    ({"users": [{"items": [1]}], "k": 0}, 422, "k"),
    ({"users": [{"items": [1]}], "k": MAX_K + 1}, 422, "k"),
    ({"users": [{"items": 5}]}, 422, "users[0].items"),
    ({"users": [{"items": [1, 2], "ratings": [5.0]}]}, 422, "users[0].ratings"),
    ({"users": [{"items": [1, 2], "timestamps": [1]}]}, 422, "users[0].timestamps"),
    ({"users": [{"items": [1], "colour": "red"}]}, 422, "users[0].colour"),
    ({"users": [{"items": list(range(MAX_HISTORY + 1))}]}, 422, "users[0].items"),
    ({"users": [{"items": [1]}], "exclude_seen": "maybe"}, 422, "exclude_seen"),
    ({"users": [{"items": [2**63]}]}, 422, "users[0].items[0]"),  # no 64-bit id (the fuzz found a 500 here)
    ({"users": [{"items": [1]}], "history_kind": "recent"}, 422, "history_kind"),
    ({"users": [{"items": [1]}], "at": "next tuesday"}, 422, "at"),
    ({"users": [{"items": [1]}], "at": "nan"}, 422, "at"),  # a number as text must be finite too
])
def test_bad_requests_name_the_field_and_the_fix(served, body, status, field):
    r = served.client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    answer = r.json()
    assert answer["field"] == field and answer["fix"] and field.split(".")[-1].split("[")[0] in answer["error"]
    assert "Traceback" not in r.text


def test_unreadable_and_oversized_bodies(served):
    r = served.client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    big = json.dumps({"users": [{"items": list(range(500))}] * 500}).encode()
    assert len(big) > MAX_BODY_BYTES
    r = served.client.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))  # no Content-Length: counted as it arrives
    r = served.client.post("/recommend", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"
    r = served.client.post("/recommend", content=b"users=1", headers={"content-type": "text/plain"})
    assert r.status_code in (400, 422) and r.json()["field"] == "body" and r.json()["fix"]
    r = served.client.post("/recommend", content=b'{"users": [{"items": [1], "ratings": [1e400]}]}',
                           headers={"content-type": "application/json"})  # 1e400 reads as infinity
    assert r.status_code == 422 and r.json()["field"] == "users[0].ratings[0]", r.text
    r = served.client.get("/nowhere")
    assert r.status_code == 404 and r.json()["field"] == "path"
    r = served.client.post("/recommend", json={"users": [{"items": [10**12, "nope"]}], "k": 2})
    assert r.status_code == 200 and r.json()["results"][0]["unknown_items"] == 2  # ignored and counted, as the CLI


def test_reload_under_load_and_a_damaged_model_refused(model_dirs, taste_log):
    first, second = model_dirs
    shas = {json.loads((d / "model.json").read_text())["weights_sha256"]: MetaRecommender.load(d) for d in model_dirs}
    users = _users(taste_log, 8)
    with Server(create_app(first, reload_token=TOKEN, reload_root=first.parent)) as server:
        stop = threading.Event()
        answers = []

        def hammer():
            with httpx.Client(base_url=str(server.client.base_url), timeout=30) as client:
                while not stop.is_set():
                    answers.append(client.post("/recommend", json={"users": users[:3], "k": 5}))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        reloaded = server.client.post("/reload", json={"path": second.name}, headers=AUTH)  # relative to the root
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(30)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["name"] == server.client.get("/model").json()["name"] == second.name
        assert answers and all(a.status_code == 200 for a in answers)
        seen = {a.json()["model"] for a in answers}
        assert seen <= set(shas) and len(seen) == 2  # the old model answered until the swap, the new one after
        for a in answers[-5:]:  # each answer is its model's
            body = a.json()
            rec = shas[body["model"]]
            assert body["results"][0]["items"] == _library(rec, users[0], 5).items.tolist()

        served_sha = server.client.get("/model").json()["weights_sha256"]
        damaged = first.parent / "damaged"
        shutil.copytree(second, damaged)
        weights = damaged / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)
        refused = server.client.post("/reload", json={"path": "damaged"}, headers=AUTH)
        assert refused.status_code == 409 and refused.json()["field"] == "path"
        assert "sha256" not in refused.text  # the reason is the server's log's (test_refused_reloads_...)
        assert server.client.get("/model").json()["weights_sha256"] == served_sha
        assert server.client.post("/recommend", json={"users": users[:1]}).status_code == 200


# ---- who may reload, and what ----------------------------------------------------------------------------

def _reload_attempts(root) -> list[dict]:
    """POST /reload bodies that the old service answered differently by what exists on the machine."""
    return [{"path": "/etc"}, {"path": "/nonexistent"}, {"path": str(root / "missing")}, {"path": "../../etc"}]


def test_reload_over_http_is_off_without_a_token(served, model_dirs):
    before = served.client.get("/model").json()
    answers = [served.client.post("/reload", json=body) for body in [*_reload_attempts(model_dirs[0].parent), {}]]
    answers += [served.client.post("/reload", json={"path": model_dirs[1].name}, headers=AUTH),  # any token
                served.client.post("/reload", content=b"{not json", headers={"content-type": "application/json"}),
                served.client.post("/reload")]
    assert {a.status_code for a in answers} == {403}, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1  # the same answer whatever was asked
    assert "RECMAML_RELOAD_TOKEN" in answers[0].json()["fix"]
    assert served.client.get("/model").json() == before


def test_reload_needs_the_token(model_dirs):
    with Server(create_app(model_dirs[0], reload_token=TOKEN)) as server:
        wrong = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")  # as long as the token, one byte off
        headers = [{}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
                   {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}, {"Authorization": "Bearer é".encode()}]
        answers = [server.client.post("/reload", json={}, headers=h) for h in headers]
        answers.append(server.client.post("/reload", content=b"{not json",  # the body is not read without the token
                                          headers={"content-type": "application/json", **headers[1]}))
        assert {a.status_code for a in answers} == {401}, [a.text for a in answers]
        assert len({a.text for a in answers}) == 1 and answers[0].headers["www-authenticate"] == "Bearer"
        assert TOKEN not in answers[0].text
        right = server.client.post("/reload", content=b"{not json", headers={"content-type": "application/json", **AUTH})
        assert right.status_code == 422 and right.json()["field"] == "body"
        reloaded = server.client.post("/reload", headers=AUTH)  # no body: the served directory, again
        assert reloaded.status_code == 200 and reloaded.json()["name"] == model_dirs[0].name


def test_refused_reloads_say_nothing_of_the_servers_folders(model_dirs, tmp_path, caplog):
    first, second = model_dirs
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(first, root / "current")
    elsewhere = tmp_path / "elsewhere"  # a real model, outside the root, reached by a symlink inside it
    shutil.copytree(second, elsewhere)
    (root / "link").symlink_to(elsewhere, target_is_directory=True)
    damaged = root / "damaged"
    shutil.copytree(second, damaged)
    (damaged / "weights.safetensors").write_bytes(b"\0" * 64)
    (root / "not-a-model").mkdir()
    caplog.set_level(logging.INFO, logger="recmaml.service")
    with Server(create_app(root / "current", reload_token=TOKEN, reload_root=root)) as server:
        before = server.client.get("/model").json()
        bodies = [*_reload_attempts(root), {"path": "link"}, {"path": str(elsewhere)}, {"path": "damaged"},
                  {"path": "not-a-model"}, {"path": "current/../../elsewhere"}, {"path": "a\u0000b"}, {"path": ""}]
        answers = [server.client.post("/reload", json=body, headers=AUTH) for body in bodies]
        assert {a.status_code for a in answers} == {409}, [a.text for a in answers]
        assert len({a.text for a in answers}) == 1 and answers[0].json()["field"] == "path"
        for word in ("/etc", "such", "exist", "not a recmaml", "sha256", str(tmp_path)):
            assert word not in answers[0].text
        assert server.client.get("/model").json() == before
        logged = caplog.text
        assert "outside the reload root" in logged and "sha256" in logged  # the operator's log has the reasons
        shutil.copytree(second, root / "next")
        taken = server.client.post("/reload", json={"path": "next"}, headers=AUTH)
        assert taken.status_code == 200 and taken.json()["weights_sha256"] != before["weights_sha256"]
        assert taken.json()["name"] == "next"


@pytest.fixture
def cli_main():
    """recmaml.cli.main (conftest puts the root logger back after each test)."""
    from recmaml.cli import main

    return main


def test_the_reload_token_root_and_workers_are_checked_at_start(model_dirs, monkeypatch, capsys, cli_main):
    from recmaml.cli.service import TOKEN_ENV
    from recmaml.service import RELOAD_TOKEN_ENV

    assert TOKEN_ENV == RELOAD_TOKEN_ENV
    serve = ["serve", "--model", str(model_dirs[0]), "--port", "1"]
    cases = [({"RECMAML_RELOAD_TOKEN": "short"}, [], "RECMAML_RELOAD_TOKEN: the secret has 5 characters"),
             ({}, ["--reload-token", "sixteen chars and a space"], "--reload-token: the secret travels"),
             ({}, ["--reload-root", str(model_dirs[0] / "nowhere")], "--reload-root"),
             ({}, ["--workers", "0"], "--workers 0: give at least 1")]
    for env, flags, words in cases:
        monkeypatch.delenv("RECMAML_RELOAD_TOKEN", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert cli_main([*serve, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("recmaml serve: error: ") and words in err[0], err
    with pytest.raises(Exception, match="at least 16"):
        create_app(model_dirs[0], reload_token="short")


# ---- --device, and the access log ----------------------------------------------------------------------------

@pytest.mark.skipif(_cuda_available(), reason="checks the refusal where no CUDA device is present")
def test_serve_on_an_absent_cuda_device_fails_at_start(model_dirs, capsys, cli_main):
    assert cli_main(["serve", "--model", str(model_dirs[0]), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recmaml serve: error: --device cuda: ") and "use cpu" in err[0], err


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU")
def test_serve_on_cuda(model_dirs, taste_log):
    with Server(create_app(model_dirs[0], device="cuda")) as server:
        assert server.server.config.app.state.service.loaded.rec.device.type == "cuda"
        r = server.client.post("/recommend", json={"users": _users(taste_log, 3), "k": 5})
        assert r.status_code == 200 and all(len(u["items"]) == 5 for u in r.json()["results"]), r.text


ACCESS_LINE = re.compile(r"^(GET|POST) (\S+) (\d{3}|-) users=(\d+|-) \d+\.\dms$")


def test_one_access_log_line_per_request(served, taste_log, caplog):
    caplog.set_level(logging.INFO, logger="recmaml.access")
    served.client.post("/recommend", json={"users": _users(taste_log, 3), "k": 2})
    served.client.post("/predict", json={"users": [{**u, "score_items": [1, 2]} for u in _users(taste_log, 2)]})
    served.client.get("/health")
    served.client.post("/recommend", json={"users": [{"items": [1]}], "k": 0})
    served.client.post("/recommend", content=b"x" * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"})
    lines = [r.getMessage() for r in caplog.records if r.name == "recmaml.access"]
    fields = [ACCESS_LINE.match(line).groups() for line in lines]
    assert fields == [("POST", "/recommend", "200", "3"), ("POST", "/predict", "200", "2"),
                      ("GET", "/health", "200", "-"), ("POST", "/recommend", "422", "-"),
                      ("POST", "/recommend", "413", "-")], lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_the_requests_in_flight(model_dirs, taste_log):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recmaml", "serve", "--model", str(model_dirs[0]), "--port",
                             str(port), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, proc)
        users = _users(taste_log, 12)
        released = threading.Event()

        def ask(user):
            text = json.dumps({"users": [user], "k": 5}).encode()

            def slowly():  # the rest of the body comes after SIGTERM: the request is in flight then
                yield text[:10]
                released.wait(60)
                yield text[10:]

            return httpx.post(f"{base}/recommend", content=slowly(), timeout=30,
                              headers={"content-type": "application/json"})

        with ThreadPoolExecutor(12) as pool:
            pending = [pool.submit(ask, user) for user in users]
            try:
                # SIGTERM once the server holds all twelve (a fixed wait raced a busy machine: a request not
                # yet connected when the server stops listening is refused, which says nothing of those in flight)
                _wait_for(lambda: httpx.get(f"{base}/health", timeout=5).json()["in_flight"] == 12 + 1)  # + itself
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)  # the server starts shutting down with every body half received
            finally:
                released.set()
            answers = [f.result() for f in pending]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert proc.wait(60) == 0
        # the server's stderr: one access line per request, uvicorn's own access log not beside it
        log = proc.stdout.read()
        lines = [m.groups() for m in map(ACCESS_LINE.match, log.splitlines()) if m]
        assert lines.count(("POST", "/recommend", "200", "1")) == len(users), log
        assert "HTTP/1.1" not in log and "POST /reload is off" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_unexpected_error_is_a_500_without_a_traceback(served, taste_log, monkeypatch):
    from recmaml import service

    def broken(rec, jobs):
        raise RuntimeError("a bug deep inside, with a path /secret/place")

    monkeypatch.setattr(service, "_rank_jobs", broken)
    r = served.client.post("/recommend", json={"users": _users(taste_log, 1)})
    assert r.status_code == 500 and r.json()["error"].startswith("internal error")
    assert "Traceback" not in r.text and "/secret/place" not in r.text
    monkeypatch.undo()
    assert served.client.post("/recommend", json={"users": _users(taste_log, 1)}).status_code == 200


def test_sighup_takes_up_the_model_rewritten_in_place(model_dirs, tmp_path):
    """With POST /reload off (no token), and --quiet: no access log."""
    served_dir = tmp_path / "model"
    shutil.copytree(model_dirs[0], served_dir)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recmaml", "serve", "--model", str(served_dir), "--port", str(port),
                             "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, proc)
        before = httpx.get(f"{base}/model").json()["weights_sha256"]
        MetaRecommender.load(model_dirs[1]).save(served_dir)  # `recmaml fit --out` over the served folder
        proc.send_signal(signal.SIGHUP)
        expected = json.loads((model_dirs[1] / "model.json").read_text())["weights_sha256"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/model").json()["weights_sha256"] != expected:
            assert time.monotonic() < deadline, "SIGHUP did not reload the model"
            time.sleep(0.1)
        assert before != expected
        proc.terminate()
        assert proc.wait(60) == 0
        assert not [line for line in proc.stdout.read().splitlines() if ACCESS_LINE.match(line)]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)


def _wait_healthy(base: str, proc) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except (httpx.TransportError, OSError):  # not listening yet: refused, or reset while it starts
            pass
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.1)


def _wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not true after {seconds} s"
        time.sleep(0.1)  # each poll is an access-log line in the server's piped stderr: few of them


def test_recommend_and_predict_take_history_kind_and_at_as_the_api_does(served, model_dirs, taste_log):
    rec = MetaRecommender.load(model_dirs[0])
    users = [{k: v for k, v in user.items() if k != "timestamps"} for user in _users(taste_log, 3)]  # arrive at `at`
    lists = {}
    for kind in ("first", "sample"):
        r = served.client.post("/recommend", json={"users": users, "k": 5, "history_kind": kind, "at": "2024-03-01"})
        assert r.status_code == 200, r.text
        lists[kind] = r.json()["results"]
        for user, result in zip(users, lists[kind]):
            expected = rec.recommend_user(user["items"], user["ratings"], k=5, history_kind=kind, at="2024-03-01")
            assert_same_ranking(result["items"], result["scores"], expected.items, expected.scores)
    assert lists["first"] != lists["sample"]  # the sample weights answered the 'sample' request
    r = served.client.post("/predict", json={"users": [{**users[0], "score_items": [0, 5]}], "history_kind": "sample",
                                             "at": 1_700_000_000})
    assert r.status_code == 200, r.text
    import pandas as pd

    history = pd.DataFrame({"user_id": users[0]["user_id"], "item_id": users[0]["items"], "rating": users[0]["ratings"]})
    expected = rec.score(history, items=[0, 5], history_kind="sample", at=1_700_000_000)[0]
    assert_close_scores(r.json()["results"][0]["scores"], expected)


def test_serve_history_kind_sets_the_services_default(model_dirs, taste_log, monkeypatch):
    from recmaml import service
    from recmaml.cli import main

    rec = MetaRecommender.load(model_dirs[0])
    assert rec.config.serve.history_kind == "first"  # the model's own default (fitted with timestamps)
    users = _users(taste_log, 2)
    with Server(create_app(model_dirs[0], history_kind="sample", reload_token=TOKEN)) as server:
        assert server.client.get("/model").json()["config"]["serve"]["history_kind"] == "sample"
        for kind, body in (("sample", {}), ("first", {"history_kind": "first"})):  # a request's kind still wins
            results = server.client.post("/recommend", json={"users": users, "k": 5, **body}).json()["results"]
            for user, result in zip(users, results):
                expected = _library(rec, user, 5, history_kind=kind)
                assert_same_ranking(result["items"], result["scores"], expected.items, expected.scores)
        assert server.client.post("/reload", headers=AUTH).status_code == 200  # a reload keeps the service's default
        assert server.client.get("/model").json()["config"]["serve"]["history_kind"] == "sample"
    calls = []
    monkeypatch.setattr(service, "run", lambda *args, **kwargs: calls.append(kwargs))
    assert main(["serve", "--model", str(model_dirs[0]), "--history-kind", "sample"]) == 0
    assert calls[0]["history_kind"] == "sample"


def test_a_batch_of_requests_served_as_different_kinds_and_times_answers_each_as_alone(model_dirs, taste_log):
    from recmaml.cold import UserHistory
    from recmaml.serve import rank_histories
    from recmaml.service import _Job, _rank_jobs

    rec = MetaRecommender.load(model_dirs[0])
    users = _users(taste_log, 4)
    histories = [UserHistory(u["items"], u["ratings"]) for u in users]  # no timestamps: they arrive at `at`
    served_as = [("first", None), ("sample", None), (None, 1.6e9), ("sample", 1.6e9)]
    jobs = [_Job([h], 5, True, None, how) for h, how in zip(histories, served_as)]
    for job, answer in zip(jobs, _rank_jobs(rec, jobs)):
        kind, at = job.served_as
        alone = rank_histories(rec.with_history_kind(kind).arriving_at(at), job.histories, 5)[0]
        assert_same_ranking(answer[0].items, answer[0].scores, alone.items, alone.scores)


def test_past_capacity_requests_are_refused_at_once_with_retry_after(model_dirs, taste_log, monkeypatch):
    """Batches made slow (0.3 s each): the requests that queue behind more than max_queue_ms of work get a
    503 with Retry-After and a body naming the fix at once; every request taken is answered as alone."""
    import recmaml.service as service_module

    rank_jobs = service_module._rank_jobs

    def slow(served, jobs):
        time.sleep(0.3)  # on the event loop's thread, as real work is: requests pile up meanwhile
        return rank_jobs(served, jobs)

    monkeypatch.setattr(service_module, "_rank_jobs", slow)
    rec = MetaRecommender.load(model_dirs[0])
    users = _users(taste_log, 24)
    with Server(create_app(model_dirs[0], max_users=2, max_queue_ms=50, access=False)) as server:
        for _ in range(Batcher.WARMUP_BATCHES + 1):  # warm-up batches, then one that sets the rate
            assert server.client.post("/recommend", json={"users": users[:1], "k": 3}).status_code == 200

        def ask(i):
            with httpx.Client(base_url=str(server.client.base_url), timeout=60) as client:
                started = time.monotonic()
                answer = client.post("/recommend", json={"users": [users[i]], "k": 3})
                return i, answer, time.monotonic() - started

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(ask, range(12)))
    refused = [(i, r, s) for i, r, s in answers if r.status_code == 503]
    taken = [(i, r) for i, r, _ in answers if r.status_code == 200]
    assert refused and taken and len(refused) + len(taken) == 12
    for _, answer, _ in refused:
        assert int(answer.headers["Retry-After"]) >= 1
        body = answer.json()
        assert "past its capacity" in body["error"] and "--max-queue-ms" in body["fix"]
    for i, answer in taken:
        expected = _library(rec, users[i], 3)
        result = answer.json()["results"][0]
        assert_same_ranking(result["items"], result["scores"], expected.items, expected.scores)


def _children(pid: int) -> set[int]:
    """The worker processes of the server `pid` (Linux's /proc): its children started by multiprocessing's
    spawn (not its resource tracker)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    spawned = b"spawn_main" in f.read()
            except (OSError, ValueError, IndexError):
                continue  # a process that ended while we looked
            if parent == pid and spawned:
                found.add(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes in /proc")
def test_workers_answer_the_librarys_lists_and_all_follow_a_reload(model_dirs, taste_log, tmp_path):
    """`recmaml serve --workers 2`: two processes answer on the port with the library's lists; a POST /reload
    taken up by one of them is taken up by both (each replaced by a new process serving the new model);
    SIGTERM stops them all."""
    root = tmp_path / "models"
    for name, source in zip(("a", "b"), model_dirs):
        shutil.copytree(source, root / name)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recmaml", "serve", "--model", str(root / "a"), "--port", str(port),
                             "--workers", "2", "--reload-root", str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "RECMAML_RELOAD_TOKEN": TOKEN})
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, proc)
        _wait_for(lambda: len(_children(proc.pid)) == 2)
        workers = _children(proc.pid)
        rec = MetaRecommender.load(model_dirs[0])
        users = _users(taste_log, 8)
        with ThreadPoolExecutor(8) as pool:  # concurrent connections: both workers answer some
            answers = list(pool.map(lambda u: httpx.post(f"{base}/recommend", json={"users": [u], "k": 5}, timeout=30),
                                    users))
        for user, answer in zip(users, answers):
            assert answer.status_code == 200, answer.text
            expected, result = _library(rec, user, 5), answer.json()["results"][0]
            assert_same_ranking(result["items"], result["scores"], expected.items, expected.scores)
        reloaded = httpx.post(f"{base}/reload", json={"path": "b"}, headers=AUTH, timeout=60)
        assert reloaded.status_code == 200, reloaded.text
        new_sha = json.loads((model_dirs[1] / "model.json").read_text())["weights_sha256"]
        assert reloaded.json()["weights_sha256"] == new_sha
        # every worker is replaced by one that serves the new model (started before its predecessor stops)
        _wait_for(lambda: not (_children(proc.pid) & workers) and len(_children(proc.pid)) == 2, seconds=240)
        shas = {httpx.get(f"{base}/model", timeout=30).json()["weights_sha256"] for _ in range(20)}
        assert shas == {new_sha}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "POST /reload is on" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            for worker in _children(proc.pid):  # not left listening when the test fails
                os.kill(worker, signal.SIGKILL)
            proc.kill()
            proc.wait()
