"""Prometheus metrics under text-embeddings-inference's names, labels and buckets (`te_*`: TEI's
core/src/infer.rs, router/src/http/server.rs, router/src/lib.rs, router/src/prometheus.rs), so TEI dashboards work:

    te_request_count{method}, te_request_success{method}   requests of the routes that run the model ("single" or
                                                          "batch"; not /tokenize and /decode, as in TEI;
                                                          "unparsed": refused 429 before their body was read)
    te_request_duration, te_request_{tokenization,queue,inference}_duration   one observation per request
    te_request_failure{err}                               errors by kind: TEI's label where TEI counts the kind
                                                          (`TEI_LABELS`: an empty text is "validation"), else
                                                          coulisse's kind (the HTTP layer's: "unauthorized"...)
    te_embed_*, te_predict_*   count, success, duration, tokenization/queue/inference durations, per input:
                               te_embed_* for an embedding model, te_predict_* for every other task
    te_request_input_length    tokens per input; buckets: the powers of two up to the model's max_input_length
    te_queue_size, te_batch_next_size, te_batch_next_tokens, te_batch_inference_duration, te_requests_in_flight,
    te_batch_dropped_inputs    the batcher's

A dozen metrics do not need a client library: counters, gauges and histograms with labels, rendered
in the text exposition format (version 0.0.4). Every update happens on the event loop thread
(the batcher reports the worker's timings back to the loop), so no lock is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

# TEI's buckets (router/src/prometheus.rs): durations grow geometrically from 15 µs by 1.5x.
DURATION_BUCKETS = tuple(1e-5 * 1.5 ** (i + 1) for i in range(35))
SIZE_BUCKETS = tuple(float(2**i) for i in range(13))
TOKEN_BUCKETS = tuple(float(2**i) for i in range(21))
INPUT_LENGTH_BUCKETS = tuple(float(2**i) for i in range(20))  # TEI's, cut at the model's max_input_length
# TEI's `err` label for the error kinds TEI counts under another name (errors.ERRORS' keys otherwise)
TEI_LABELS = {"empty": "validation", "input_length": "tokenization", "backend": "inference"}


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "", const: str = "") -> str:
    pairs = [const] if const else []
    pairs += [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        self.name, self.help, self.label_names = name, help, tuple(labels)

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise KeyError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}: a bug")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(self._key(labels), 0.0)

    def series(self, const: str = "") -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k, const=const)} {_number(v)}"
                for k, v in sorted(self.values.items())]

    def render(self) -> list[str]:
        return self.header() + self.series()


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        self.values[self._key(labels)] = float(value)


class Histogram(Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Iterable[float], labels: Sequence[str] = ()):
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        # per label set: counts per bucket (non-cumulative, last = +Inf), sum
        self.observed: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, times: int = 1, **labels: str) -> None:
        counts, total = self.observed.setdefault(self._key(labels), ([0] * (len(self.buckets) + 1), [0.0]))
        counts[next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))] += times
        total[0] += value * times

    def count(self, **labels: str) -> int:
        series = self.observed.get(self._key(labels))
        return sum(series[0]) if series else 0

    def series(self, const: str = "") -> list[str]:
        lines = []
        for key, (counts, total) in sorted(self.observed.items()):
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le, const)} {running}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key, const=const)} {_number(total[0])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key, const=const)} {running}")
        return lines

    def render(self) -> list[str]:
        return self.header() + self.series()


class Failures(Counter):
    """te_request_failure{err}: the error kinds TEI counts too under TEI's label (`TEI_LABELS`)."""

    def __init__(self):
        super().__init__("te_request_failure", "Requests answered with an error, by kind", ("err",))

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        super().inc(amount, err=TEI_LABELS.get(labels["err"], labels["err"]))

    def value(self, **labels: str) -> float:
        return super().value(err=TEI_LABELS.get(labels["err"], labels["err"]))


class PerInput:
    """TEI's te_embed_* or te_predict_*: one observation per input (core/src/infer.rs records them per input)."""

    def __init__(self, prefix: str, what: str):
        self.count = Counter(f"{prefix}_count", f"Inputs sent to the {what} model")
        self.success = Counter(f"{prefix}_success", f"Inputs the {what} model answered")
        self.duration = Histogram(f"{prefix}_duration", "Seconds from the request's start to its answer, per input",
                                  DURATION_BUCKETS)
        self.tokenization = Histogram(f"{prefix}_tokenization_duration", "Tokenization seconds, per input (its "
                                      "request's: a request's inputs are tokenized together)", DURATION_BUCKETS)
        self.queue = Histogram(f"{prefix}_queue_duration", "Seconds an input waited in the queue", DURATION_BUCKETS)
        self.inference = Histogram(f"{prefix}_inference_duration", "Forward seconds of the batch that carried the "
                                   "input", DURATION_BUCKETS)

    def all(self) -> list[Metric]:
        return [self.count, self.success, self.duration, self.tokenization, self.queue, self.inference]


class ServerMetrics:
    """The metrics of one server, or of one model of a several-model server (`describe_model`)."""

    def __init__(self) -> None:
        self.request_count = Counter("te_request_count", "Requests received by the routes that run the model",
                                     ("method",))
        self.request_success = Counter("te_request_success", "Requests answered 200 by the routes that run the "
                                       "model", ("method",))
        self.request_failure = Failures()
        self.request_duration = Histogram("te_request_duration", "Request latency in seconds (server side)",
                                          DURATION_BUCKETS)
        self.tokenization_duration = Histogram("te_request_tokenization_duration",
                                               "Tokenization time per request", DURATION_BUCKETS)
        self.request_queue_duration = Histogram("te_request_queue_duration", "Time a request's inputs waited in "
                                                "the queue (the longest wait)", DURATION_BUCKETS)
        self.request_inference_duration = Histogram("te_request_inference_duration", "Forward time of the "
                                                    "batches that carried a request's inputs (the longest)",
                                                    DURATION_BUCKETS)
        self.embed = PerInput("te_embed", "embedding")
        self.predict = PerInput("te_predict", "classification (every task but embedding)")
        self.input_length = Histogram("te_request_input_length", "Tokens per input", INPUT_LENGTH_BUCKETS)
        self.in_flight = Gauge("te_requests_in_flight", "Requests holding a concurrency permit")
        self.queue_size = Gauge("te_queue_size", "Inputs waiting for a batch")
        self.batch_size = Histogram("te_batch_next_size", "Inputs per batch", SIZE_BUCKETS)
        self.batch_tokens = Histogram("te_batch_next_tokens", "Tokens per batch", TOKEN_BUCKETS)
        self.batch_duration = Histogram("te_batch_inference_duration", "Forward time per batch",
                                        DURATION_BUCKETS)
        self.batch_dropped = Counter("te_batch_dropped_inputs",
                                     "Inputs dropped before compute because their client disconnected")
        self.per_input = self.predict  # the family this model's inputs count in (`describe_model`)
        self.queue_size.set(0)
        self.in_flight.set(0)

    def describe_model(self, embedding: bool, max_input_length: int) -> None:
        """What the model is, once its Service read it and before any request: its inputs count in te_embed_*
        (an embedding model) or te_predict_*, and te_request_input_length's buckets stop at its
        max_input_length, as TEI's do."""
        if self.input_length.observed:
            raise RuntimeError("describe_model after a request was counted: this is a bug")
        self.per_input = self.embed if embedding else self.predict
        self.input_length.buckets = tuple(b for b in INPUT_LENGTH_BUCKETS if b <= max_input_length)

    # Observed by Service for each input as its batch answers it (TEI: te_embed_/te_predict_queue_duration...).
    @property
    def queue_duration(self) -> Histogram:
        return self.per_input.queue

    @property
    def inference_duration(self) -> Histogram:
        return self.per_input.inference

    def answered(self, method: str, inputs: int, seconds: float, tokenization_s: float, queue_s: float,
                 inference_s: float) -> None:
        """A request of a route that runs the model, answered 200: once per request, then per input."""
        self.request_success.inc(method=method)
        self.request_duration.observe(seconds)
        self.request_queue_duration.observe(queue_s)
        self.request_inference_duration.observe(inference_s)
        self.per_input.success.inc(inputs)
        # A request's inputs are tokenized together and answered together: each input's times are its request's.
        self.per_input.duration.observe(seconds, inputs)
        self.per_input.tokenization.observe(tokenization_s, inputs)

    def all(self) -> list[Metric]:
        return [self.request_count, self.request_success, self.request_failure, self.request_duration,
                self.tokenization_duration, self.request_queue_duration, self.request_inference_duration,
                *self.embed.all(), *self.predict.all(), self.input_length, self.in_flight, self.queue_size,
                self.batch_size, self.batch_tokens, self.batch_duration, self.batch_dropped]

    def render(self) -> str:
        return "\n".join(line for metric in self.all() for line in metric.render()) + "\n"


def render_by_model(server: ServerMetrics, models: dict[str, ServerMetrics]) -> str:
    """Several models in one server: each family once, every model's series labelled `model="NAME"`,
    then the server's own (the HTTP layer's refusals, which no model answered; its idle gauges left out)."""
    lines = []
    for family, *per_model in zip(server.all(), *(m.all() for m in models.values()), strict=True):
        lines += family.header()
        for name, metric in zip(models, per_model, strict=True):
            lines += metric.series(f'model="{_escape(name)}"')
        if not isinstance(family, Gauge):
            lines += family.series()
    return "\n".join(lines) + "\n"
