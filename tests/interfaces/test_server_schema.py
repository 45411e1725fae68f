"""Fuzz the API from its own OpenAPI schema (schemathesis, in-process ASGI: no socket, bounded examples).

Every generated request must get a status the schema documents, a body that matches the documented
schema (TEI's error shape included), and never a 5xx. Valid data must be accepted, invalid rejected.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402


@pytest.fixture(scope="module", params=["sentiment-analysis", "feature-extraction"])
def api_schema(request, tf_camembert_dir, minilm_dir):
    model = tf_camembert_dir if request.param == "sentiment-analysis" else minilm_dir
    pipe = coulisse.pipeline(request.param, model=str(model))
    app = create_app(pipe, ServerSettings(max_client_batch_size=8))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # More inputs than maxItems is refused with TEI's 413, not a 422: a rejection all the same.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return schema


# schemathesis' own pytest plugin (`@schema.parametrize()`) does not run under pytest 9: drive its
# Hypothesis strategy directly.
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(api_schema, mode):
    @given(case=api_schema.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate()

    check()
