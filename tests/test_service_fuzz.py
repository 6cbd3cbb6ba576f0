"""A property-based fuzz of `recmaml serve`'s own OpenAPI schema (schemathesis): requests generated from the
schema for every operation, valid and invalid bodies alike, against a real server; none may get a 5xx."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("uvicorn")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from recmaml.service import create_app  # noqa: E402
from test_service import Server  # noqa: E402


def test_no_generated_request_gets_a_server_error(tiny_model_dir):
    with Server(create_app(tiny_model_dir)) as server:
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
                    if case.path == "/reload" and isinstance(case.body, dict):
                        case.body = {"path": "/nonexistent/model"}  # refused (409); the served model stays
                    response = case.call()
                    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
                    assert "Traceback" not in response.text

                no_server_error()
        assert server.client.get("/model").json()["path"] == str(tiny_model_dir)
