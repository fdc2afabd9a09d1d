"""The service's contract: its OpenAPI description says what each endpoint takes and answers (the photo body,
every error status with its JSON shape, /metrics' content type), a 405 names the methods a path takes, and
schemathesis (every check) finds no answer outside the description, against a real server with a real model."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from schemathesis import engine
from schemathesis.engine import Status, StopReason, events

from fruits_assets.app.service import create_app
from tests.fruits_assets.app.serving import Serving

ERROR = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module")
def contract_service(trained_run):
    with Serving(create_app(str(trained_run[1]), max_bytes=2_000_000, poll_seconds=0.5)) as served:
        yield served.wait_ready()


def test_a_405_names_the_methods_the_path_takes(contract_service):
    for method, path, allowed in [
        ("PUT", "/v1/predict", "POST"),
        ("POST", "/v1/fruits", "GET"),
        ("DELETE", "/", "GET"),
        ("PUT", "/v1/feedback", "GET, POST"),  # two routes of one path: both their methods
    ]:
        response = requests.request(method, f"{contract_service.url}{path}", timeout=10)
        assert response.status_code == 405 and response.headers["Allow"] == allowed, (method, path)
        assert set(response.json()) == {"error"}


def test_the_description_says_what_predict_takes_and_every_status_it_answers(contract_service):
    described = requests.get(f"{contract_service.url}/openapi.json", timeout=10).json()
    predict = described["paths"]["/v1/predict"]["post"]
    body = predict["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/octet-stream"]["schema"] == {"type": "string", "format": "binary"}
    assert body["content"]["multipart/form-data"]["schema"]["required"] == ["photo"]
    for status in ("400", "413", "415", "422", "500", "503"):
        assert predict["responses"][status]["content"]["application/json"]["schema"] == ERROR, status
    assert "Retry-After" in predict["responses"]["503"]["headers"]
    assert predict["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Prediction"
    }
    metrics = described["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    for probe in ("/livez", "/readyz", "/healthz"):
        assert set(described["paths"][probe]["get"]["responses"]) == {"200", "503"}


def test_schemathesis_with_every_check_finds_no_answer_outside_the_description(contract_service):
    """What `st run URL/openapi.json --checks all` does, through schemathesis' engine (its pytest plugin does not
    run on pytest 9): every phase and check against the service's own description; no failure, no error."""
    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": 50},
            "checks": {
                # A body the schema allows (any bytes) need not be an image: 400/415/422 are its documented answers;
                # feedback is off here (no token), which /v1/feedback answers 404, as it does an unknown photo id.
                "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "413", "415", "422"]},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{contract_service.url}/openapi.json", config=config)
    failures: set[tuple[str, str, str]] = set()
    errors: list[str] = []
    checked: dict[str, int] = {}
    for event in engine.from_schema(schema).execute():
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            for check in (check for checks in event.recorder.checks.values() for check in checks):
                checked[check.name] = checked.get(check.name, 0) + 1
                if check.status == Status.FAILURE:
                    detail = str(check.failure_info.failure) if check.failure_info else ""
                    failures.add((event.recorder.label, check.name, detail[:300]))
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(repr(event))
        elif isinstance(event, events.EngineFinished):
            assert event.stop_reason == StopReason.COMPLETED and not event.failures
    assert not errors and not failures, sorted(failures) or errors
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "unsupported_method",
        "response_schema_conformance",
    } <= set(checked)
    assert sum(checked.values()) > 200, checked  # the run did exercise the API
