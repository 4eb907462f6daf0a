"""Property-based API test: schemathesis generates requests for every operation of
/openapi.json and checks that the API never answers 5xx and that every answer matches the
documented status codes, content types and schemas. Bounded: a few examples per operation,
derandomized (deterministic), on SQLite (the database layer has its own PG-parametrized tests).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from . import hypothesis_compat
from .conftest import build_world

hypothesis_compat.install()

CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance)
# Operations that would take the test's own credentials away (then everything is a 401).
SKIP = {("DELETE", "/v1/tokens/{token_id}"), ("DELETE", "/v1/role-bindings/{binding_id}"),
        ("DELETE", "/v1/users/{user}")}


@pytest.fixture(scope="module")
def api_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    world = build_world(f"sqlite:///{tmp / 'gpuplane.db'}", tmp)
    yield world
    world.client.close()


@pytest.fixture(scope="module")
def api_schema(api_world):
    return schemathesis.from_asgi("/openapi.json", api_world.client.app, force_schema_version="30")


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_matches_its_schema(case, api_world):
    if (case.method.upper(), case.path) in SKIP:
        pytest.skip("would revoke the credentials this test uses")
    response = case.call(headers={**(case.headers or {}), **api_world.h("admin")})
    case.validate_response(response, checks=CHECKS)
