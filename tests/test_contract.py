"""The HTTP contract users code against: the OpenAPI document types every body, the docs'
errors, settings and accepted-files tables (docs/http-api.md, docs/settings.md) say what the
code does, and a running server's responses conform to its own schema (schemathesis)."""
from __future__ import annotations

import re

import pytest
from conftest import REPO_ROOT

from service.http.error_codes import ERRORS, UNDOCUMENTED
from service.pipeline.config import AUDIO_FORMATS, VIDEO_FORMATS
from service.settings import DEFAULT_MODEL_DIR, Settings

DOCS = REPO_ROOT / "docs"


def docs_table(heading: str, page: str = "http-api.md") -> list[list[str]]:
    """Rows (cells) of the first table after `heading` on a docs page."""
    section = (DOCS / page).read_text().split(heading + "\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # header and --- line


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


@pytest.fixture(scope="module")
def openapi() -> dict:
    from service.http.app import create_app

    return create_app(load=False).openapi()


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.unit
def test_docs_errors_table_is_the_code_table():
    docs = {code: int(row[0]) for row in docs_table("## Errors") for code in ticked(row[1])}
    assert docs == ERRORS


@pytest.mark.unit
def test_every_error_the_service_raises_is_in_the_table():
    raised = set()
    for path in (REPO_ROOT / "service").rglob("*.py"):
        text = path.read_text()
        raised |= set(re.findall(r'MediaError\(\s*"([a-z_]+)"', text))
        raised |= set(re.findall(r'ApiError\(\s*\d+,\s*"([a-z_]+)"', text))
    assert raised and raised <= set(ERRORS) | set(UNDOCUMENTED), raised - set(ERRORS) - set(UNDOCUMENTED)


@pytest.mark.unit
def test_openapi_lists_the_error_model_and_codes_per_route(openapi):
    documented: dict[str, int] = {}
    for path, ops in openapi["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if int(status) < 400:
                    continue
                schema = resp["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
                for code in ticked(resp["description"]):
                    documented[code] = int(status)
    # every documented code is in the docs' table with its status, and vice versa
    assert documented == ERRORS
    enum = openapi["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
    assert set(enum) == set(ERRORS)
    assert "HTTPValidationError" not in openapi["components"]["schemas"]  # 422 is ours too


@pytest.mark.unit
def test_every_route_has_a_typed_200(openapi):
    for path, ops in openapi["paths"].items():
        for method, op in ops.items():
            content = op["responses"]["200"]["content"]
            if path == "/metrics":
                assert "text/plain" in content
                continue
            ref = content["application/json"]["schema"].get("$ref", "")
            assert ref.startswith("#/components/schemas/"), (method, path, content)
    predict = openapi["components"]["schemas"]["PredictResponse"]
    assert {"label", "probabilities", "modalities", "summary_frames", "duration_s", "model", "timeline",
            "timings_ms", "probabilities_by_modality"} <= set(predict["properties"])
    assert set(predict["required"]) == {"label", "probabilities", "modalities", "summary_frames", "duration_s",
                                        "model", "timings_ms"}


# --- settings -------------------------------------------------------------------------------

def _code_default(name: str) -> str | None:
    if name == "model_dir":
        return str(DEFAULT_MODEL_DIR)
    value = Settings.model_fields[name].get_default(call_default_factory=True)
    if isinstance(value, list):
        return ",".join(value) or None
    return None if value is None else str(value)


def _same(shown: str, code: str | None) -> bool:
    if code is None:
        return False
    try:
        return float(shown) == float(code)
    except ValueError:
        return shown == code


@pytest.mark.unit
def test_docs_settings_table_is_the_settings_object():
    seen = set()
    for row in docs_table("# Settings", "settings.md"):
        names = ticked(row[0])
        defaults = ticked(row[1])
        for i, var in enumerate(names):
            assert var.startswith("EMOTION_"), var
            field = var[len("EMOTION_"):].lower()
            assert field in Settings.model_fields, f"docs/settings.md documents {var}, which the code does not read"
            seen.add(field)
            code = _code_default(field)
            if len(defaults) == len(names):
                assert _same(defaults[i], code), (var, defaults[i], code)
            else:  # a default in words ("system temp", "unset"): nothing set in the code
                assert code is None, (var, row[1], code)
    assert seen == set(Settings.model_fields), set(Settings.model_fields) - seen


# --- accepted files -------------------------------------------------------------------------

@pytest.mark.unit
def test_docs_accepted_files_are_the_demuxer_allowlist():
    rows = docs_table("## Accepted files")
    docs = {(row[0], ticked(row[2])[0]): tuple(ticked(row[1])) for row in rows}
    code = {**{("video", d): e for d, e in VIDEO_FORMATS.items()}, **{("audio", d): e for d, e in AUDIO_FORMATS.items()}}
    assert docs == code


# --- a running server against its own schema --------------------------------------------------

CHECKED_EXAMPLES = 50


@pytest.mark.slow
def test_responses_conform_to_the_openapi_document(server):
    """schemathesis generates requests for every operation from /openapi.json and checks each
    response: no 5xx, a documented status, the documented content type, a body that validates
    against the documented schema, documented headers."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, response_headers_conformance]
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    failures, calls = [], {}
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=CHECKED_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case):
            response = case.call(base_url=server.url, timeout=60)
            calls[op.label] = calls.get(op.label, 0) + 1
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # noqa: BLE001 - collected, reported together
                failures.append((op.label, response.status_code, str(exc)[:400]))

        run()
    assert not failures, failures[:10]
    ops = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/models", "GET /v1/models/{name}/report",
           "POST /predict", "POST /v1/predict"}
    assert set(calls) == ops, calls
    # Operations with inputs get >= 50 generated requests each; those without any (GET
    # /healthz, /readyz, /metrics, /v1/models) have one possible request, which hypothesis
    # sends and then stops: the whole input space is covered.
    assert all(calls[op] >= CHECKED_EXAMPLES for op in ("GET /v1/models/{name}/report", "POST /predict",
                                                          "POST /v1/predict")), calls
    assert list(server.tmp.iterdir()) == []
