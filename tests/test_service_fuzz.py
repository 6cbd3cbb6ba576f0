"""A property-based fuzz of `recmaml serve`'s own OpenAPI schema (schemathesis): requests generated from the
schema for every operation, valid and invalid bodies alike, against a real server; none may get a 5xx.
Twice: with POST /reload off (every generated reload is refused alike, 403), and on, with the token and a
reload root (the generated paths land under the root or are refused; the served model stays)."""

import shutil

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("uvicorn")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from recmaml.service import create_app  # noqa: E402
from test_service import AUTH, TOKEN, Server  # noqa: E402


def _fuzz(server, check_reload, headers=None) -> None:
    """Every operation of the server's schema, valid and invalid forms; check_reload(response) for /reload."""
    schema = schemathesis.openapi.from_url(f"{server.client.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend", "/predict", "/health", "/model", "/reload"}
    for operation in operations:
        modes = [schemathesis.GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":  # a GET without parameters has no invalid form
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def no_server_error(case):
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
                assert "Traceback" not in response.text
                if case.path == "/reload":
                    check_reload(response)

            no_server_error()


def test_no_generated_request_gets_a_server_error(tiny_model_dir):
    with Server(create_app(tiny_model_dir)) as server:
        served = server.client.get("/model").json()
        refused = set()

        def off(response):
            assert response.status_code == 403, response.text
            refused.add(response.text)

        _fuzz(server, off)
        assert len(refused) == 1  # one answer, whatever the body
        assert server.client.get("/model").json() == served


def test_no_generated_reload_gets_a_server_error_or_leaves_the_root(tiny_model_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_model_dir, root / "model")
    with Server(create_app(root / "model", reload_token=TOKEN, reload_root=root)) as server:
        served = server.client.get("/model").json()["weights_sha256"]
        statuses = set()

        def on(response):  # taken up (the served folder), refused, a field named, or a header generated over ours
            assert response.status_code in (200, 401, 409, 422), response.text
            statuses.add(response.status_code)

        _fuzz(server, on, headers=AUTH)
        assert 409 in statuses  # the token was taken, and generated paths reached the policy
        assert server.client.get("/model").json()["weights_sha256"] == served
