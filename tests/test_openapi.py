"""The OpenAPI document (service/openapi.py): a valid OpenAPI 3.1 document, its file downloads
under their real media types, and a bounded schemathesis run over every operation against the app
(real Redis, no worker): no 5xx, every answer documented and conforming to its schema."""
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)
from schemathesis.checks import not_a_server_error

from service.downloads import MEDIA_TYPES
from service.openapi import build_spec

TOKEN = {"Authorization": "Bearer test-token"}


def test_the_document_is_valid_openapi_3_1(app):
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    validate(spec)                                   # raises on an invalid document


def test_files_are_documented_as_what_they_are_served_as(app):
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    content = spec["paths"]["/api/v1/melodies/{job_id}.{ext}"]["get"]["responses"]["200"]["content"]
    assert "audio/wav" in content and MEDIA_TYPES["wav"] == "audio/wav" and "audio/midi" in content
    assert "application/octet-stream" not in content
    assert list(spec["paths"]["/api/v1/melodies/{job_id}.zip"]["get"]["responses"]["200"]["content"]) == \
        ["application/zip"]


schema = schemathesis.openapi.from_dict(build_spec())     # the document the app serves (built without one)


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_operation_answers_as_documented(app, case):
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    if case.operation.path != "/readyz":             # (its documented 503 says "not ready": no worker here)
        checks.append(not_a_server_error)
    case.call_and_validate(app=app, headers=TOKEN, checks=checks)
