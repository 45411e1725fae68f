"""Fuzz the API from its own OpenAPI schema (schemathesis, in-process ASGI: no socket, bounded examples).

Every generated request must get a status the schema documents, a body that matches the documented
schema (TEI's error shape included), and never a 5xx. Valid data must be accepted, invalid rejected.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402

# schemathesis and hypothesis are pytest plugins, so pytest rewrites their modules with `ast.parse` when they
# are first imported, and schemathesis imports most of its OpenAPI machinery lazily, inside the first test.
# On CPython 3.11 the AST converter keeps its recursion counter in interpreter-wide state, and a parse can
# fail spuriously ("SystemError: AST constructor recursion depth mismatch", CPython gh-106905, seen with
# threads); it did, once in CI, on both tests of the first schema, after earlier tests had left threads
# running (Ray's, tqdm's). Importing those packages here, at collection, before any test has started a
# thread, leaves nothing for the tests to rewrite.
for _package in ("schemathesis.specs.openapi", "schemathesis.openapi", "schemathesis.generation",
                 "schemathesis.core", "schemathesis.engine", "schemathesis.transport", "schemathesis.wfc",
                 "hypothesis.strategies._internal", "hypothesis.internal.conjecture"):
    try:
        _module = importlib.import_module(_package)
    except ImportError:
        continue
    for _info in pkgutil.walk_packages(getattr(_module, "__path__", []), _package + "."):
        # An optional dependency of that part missing: not used here either.
        with contextlib.suppress(ImportError):
            importlib.import_module(_info.name)


@pytest.fixture(scope="module", params=["sentiment-analysis", "feature-extraction"])
def api_schema(request, tf_camembert_dir, minilm_dir):
    model = tf_camembert_dir if request.param == "sentiment-analysis" else minilm_dir
    pipe = coulisse.pipeline(request.param, model=str(model))
    app = create_app(pipe, ServerSettings(max_client_batch_size=8))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # A body over --payload-limit is refused with 413: a rejection all the same.
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


def _keys(node, path="#"):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key
            yield from _keys(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _keys(value, f"{path}/{i}")


@pytest.mark.parametrize("task", ["sentiment-analysis", "feature-extraction"])
def test_bounds_are_json_schema_keywords(task, tf_camembert_dir, minilm_dir):
    """Numeric bounds reach the schema as `minimum` / `maximum`: pydantic's own `ge`, `gt`, `le`, `lt` keys
    (what a bound placed after a validator becomes) are read by no client, so a fuzzer sent negative
    token ids as valid data and the API's 422 looked like a contract break."""
    model = tf_camembert_dir if task == "sentiment-analysis" else minilm_dir
    schema = create_app(coulisse.pipeline(task, model=str(model))).openapi()
    stray = [f"{path}/{key}" for path, key in _keys(schema) if key in ("ge", "gt", "le", "lt")]
    assert stray == []
    ids = [path for path, key in _keys(schema) if key == "minimum"]
    assert ids, "token ids and dimensions should carry their lower bounds"
