"""/metrics as TEI records it (core/src/infer.rs, router/src/http/server.rs, router/src/lib.rs,
router/src/prometheus.rs): the te_embed_* and te_predict_* families per input, te_request_* once per request of
the routes that run the model (/tokenize and /decode not counted), TEI's `err` labels and input-length buckets.
The text is read by prometheus_client's parser where it is installed, and always by a strict reader of the text
format (version 0.0.4) below."""

from __future__ import annotations

import math
import re

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

import coulisse  # noqa: E402
from coulisse.interfaces.server import ServerSettings, create_app  # noqa: E402

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(rf"({NAME})(?:\{{((?:{LABEL},?)*)\}})? (\S+)")
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def parse(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """The text format, strictly: HELP and TYPE once per family and before its samples, a family's lines together,
    every sample of a declared family (a histogram's _bucket, _sum, _count), labels escaped, no series twice,
    each histogram's buckets cumulative up to le="+Inf" = its _count. -> (family -> type, series -> value)."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    done: set[str] = set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.fullmatch(NAME, name) and name not in done and name != current, line
            done.add(current) if current else None
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and name not in types and kind in SUFFIXES, line
            types[name] = kind
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(5)
        assert current in types and name in [current + s for s in SUFFIXES[types[current]]], line
        pairs = re.findall(LABEL, labels)
        assert len({k for k, _ in pairs}) == len(pairs), line
        key = (name, frozenset(pairs))
        assert key not in samples, f"series twice: {line}"
        samples[key] = float(value.replace("+Inf", "inf"))
    for family, kind in types.items():
        if kind == "histogram":
            check_histogram(family, samples)
    return types, samples


def check_histogram(family: str, samples: dict) -> None:
    series: dict[frozenset, list[tuple[float, float]]] = {}
    for (name, labels), value in samples.items():
        if name == family + "_bucket":
            le = dict(labels)["le"]
            series.setdefault(labels - {("le", le)}, []).append((float(le.replace("+Inf", "inf")), value))
    for labels, buckets in series.items():
        buckets.sort()
        counts = [c for _, c in buckets]
        assert counts == sorted(counts) and buckets[-1][0] == math.inf, (family, buckets)
        assert samples[(family + "_count", labels)] == counts[-1], family


def read(client) -> dict[tuple[str, frozenset], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        pass
    else:
        assert list(text_string_to_metric_families(r.text))
    return parse(r.text)[1]


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_strict_reader_refuses_what_the_format_does_not_allow():
    good = "# HELP a_b x\n# TYPE a_b counter\na_b{m=\"s\\\"q\"} 2\n"
    assert parse(good)[1] == {("a_b", frozenset({("m", 's\\"q')})): 2.0}
    for bad in (good.replace("# TYPE a_b counter\n", ""), good + "a_b{m=\"s\\\"q\"} 3\n", good + "c 1\n",
                good.replace("a_b{", "a-b{"), good.replace('"s', "s"),
                "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"):
        with pytest.raises((AssertionError, KeyError)):
            parse(bad)


def test_a_classifier_counts_as_tei_does(classifier):
    with TestClient(create_app(classifier, ServerSettings())) as client:
        before = read(client)
        assert value(before, "te_request_count", method="single") == 0
        assert client.post("/predict", json={"inputs": "Super film !"}).status_code == 200
        assert client.post("/predict", json={"inputs": [["a"], ["b c"], ["d", "e"]]}).status_code == 200
        assert client.post("/tokenize", json={"inputs": "a b"}).status_code == 200
        assert client.post("/decode", json={"ids": [5, 6]}).status_code == 200
        assert client.post("/predict", json={"inputs": [["a"], [""]]}).status_code == 400  # an empty text
        assert client.post("/embed", json={"inputs": "a"}).status_code == 424  # not this model's task
        samples = read(client)
    # te_request_*: once per request of the routes that run the model; /tokenize and /decode not counted.
    assert value(samples, "te_request_count", method="single") == 2  # /predict "Super film !", /embed (424)
    assert value(samples, "te_request_count", method="batch") == 2  # the batch of 3, the one with an empty text
    assert value(samples, "te_request_success", method="single") == 1
    assert value(samples, "te_request_success", method="batch") == 1
    for name in ("te_request_duration", "te_request_queue_duration", "te_request_inference_duration"):
        assert value(samples, name + "_count") == 2, name  # per request, not per input (4)
    # te_predict_*: per input (1 + 3); the 424 and the empty text never reached the model.
    for name in ("te_predict_count", "te_predict_success"):
        assert value(samples, name) == 4, name
    for name in ("duration", "tokenization_duration", "queue_duration", "inference_duration"):
        assert value(samples, f"te_predict_{name}_count") == 4, name
    assert not [key for key in samples if key[0].startswith("te_embed_")]
    # TEI's err labels: an empty text is "validation", a wrong model type "model_type".
    assert value(samples, "te_request_failure", err="validation") == 1
    assert value(samples, "te_request_failure", err="model_type") == 1
    assert not [key for key in samples if "route" in dict(key[1])]  # TEI's labels only
    # TEI's input-length buckets: the powers of two up to max_input_length (512), then +Inf.
    bounds = sorted(float(dict(labels)["le"].replace("+Inf", "inf")) for name, labels in samples
                    if name == "te_request_input_length_bucket")
    assert bounds == [2.0 ** i for i in range(10)] + [math.inf]
    assert value(samples, "te_request_input_length_count") == 4


def test_an_embedding_model_counts_in_te_embed(minilm_dir):
    pipe = coulisse.pipeline("feature-extraction", model=str(minilm_dir))
    with TestClient(create_app(pipe, ServerSettings())) as client:
        assert client.post("/embed", json={"inputs": ["a", "b"]}).status_code == 200
        body = {"inputs": {"source_sentence": "a", "sentences": ["b", "c"]}}
        assert client.post("/similarity", json=body).status_code == 200
        assert client.post("/v1/embeddings", json={"input": "a"}).status_code == 200
        assert client.post("/embed_all", json={"inputs": "a"}).status_code == 200
        samples = read(client)
    assert value(samples, "te_embed_count") == value(samples, "te_embed_success") == 2 + 3 + 1 + 1
    assert value(samples, "te_embed_queue_duration_count") == 7
    assert value(samples, "te_request_count", method="batch") == 2  # /embed of two, /similarity
    assert value(samples, "te_request_count", method="single") == 2  # /v1/embeddings of one text, /embed_all
    assert value(samples, "te_request_queue_duration_count") == 4
    assert not [key for key in samples if key[0].startswith("te_predict_")]
    bounds = {dict(labels)["le"] for name, labels in samples if name == "te_request_input_length_bucket"}
    assert "256" in bounds and "512" not in bounds  # all-MiniLM-L6-v2: max_seq_length 256
