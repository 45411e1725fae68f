"""The health probes: /health, SageMaker's /ping and the Inference API's GET / are one handler in TEI
(router/src/http/server.rs routes the three paths to `health`), so they answer alike, for the whole server when it
serves several models; and TEI's handler counts no `te_request_failure`, so a failing probe is no failed request.

Oracle: what /health answers, on the same server at the same moment."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402
from test_server_metrics import parse, value  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402
from coulisse.interfaces.server.routing import several_models_app  # noqa: E402

PROBES = ("/health", "/ping", "/")


def break_model(pipe, monkeypatch) -> None:
    def broken(items, *args, **kwargs):
        raise RuntimeError("weights gone")

    monkeypatch.setattr(pipe, "forward", broken)


def unhealthy_failures(metrics_text: str) -> float:
    """te_request_failure{err="unhealthy"}, whatever other labels (a model's name) the series carries."""
    return sum(v for (name, labels), v in parse(metrics_text)[1].items()
               if name == "te_request_failure" and ("err", "unhealthy") in labels)


def test_ping_and_root_answer_what_health_answers(classifier, monkeypatch):
    """Three batches failed whole (a broken model): /health is 503, and so are /ping and GET /, with its body.
    Before, /ping and / checked only that the batching loop ran, and answered 200: SageMaker kept the model in
    rotation."""
    with TestClient(create_app(classifier), raise_server_exceptions=False) as c:
        healthy = [c.get(path) for path in PROBES]
        break_model(classifier, monkeypatch)
        for _ in range(3):
            assert c.post("/predict", json={"inputs": "Bien."}).status_code == 500
        sick = [c.get(path) for path in PROBES]
    assert [r.status_code for r in healthy] == [200, 200, 200]
    health = sick[0]
    assert health.status_code == 503 and health.json()["error_type"] == "Unhealthy"
    for path, r in zip(PROBES[1:], sick[1:], strict=True):
        assert (r.status_code, r.json(), r.headers.get("retry-after")) == \
            (503, health.json(), health.headers["retry-after"]), path


def test_a_failing_probe_is_no_failed_request(classifier, monkeypatch):
    """TEI's health handler counts no `te_request_failure`: a kubelet probing a broken model every 10 s adds
    nothing to what dashboards read as failed requests; the requests that failed are counted."""
    with TestClient(create_app(classifier), raise_server_exceptions=False) as c:
        break_model(classifier, monkeypatch)
        for _ in range(3):
            c.post("/predict", json={"inputs": "Bien."})
        probes = [c.get("/health").status_code for _ in range(3)]
        metrics = c.get("/metrics").text
    assert probes == [503] * 3
    assert value(parse(metrics)[1], "te_request_failure", err="inference") == 3
    assert unhealthy_failures(metrics) == 0


def test_with_several_models_the_probes_answer_for_the_whole_server(classifier, tf_camembert_dir, monkeypatch):
    """The second model broken, the first (which unprefixed routes serve) fine: /health is 503 naming the second,
    and /ping and GET / say the same. Before, they reached the first model only and answered 200."""
    other = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    app = several_models_app([(classifier, ServerSettings(served_model_name="a")),
                              (other, ServerSettings(served_model_name="b"))])
    break_model(other, monkeypatch)
    with TestClient(app, raise_server_exceptions=False) as c:
        for _ in range(3):
            assert c.post("/b/predict", json={"inputs": "Bien."}).status_code == 500
        health, ping, root = (c.get(path) for path in PROBES)
        served = c.post("/", json={"inputs": "Bien."})  # POST / still runs the first model's task
        model_health = c.get("/a/health")
        metrics = c.get("/metrics").text
    assert health.status_code == 503 and "'b'" in health.json()["error"], health.text
    assert (ping.status_code, ping.json()) == (root.status_code, root.json()) == (503, health.json())
    assert served.status_code == 200 and model_health.status_code == 200
    assert unhealthy_failures(metrics) == 0
