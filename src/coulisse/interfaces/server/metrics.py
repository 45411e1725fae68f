"""Prometheus metrics under text-embeddings-inference's names (`te_*`), so TEI dashboards work.

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

    def observe(self, value: float, **labels: str) -> None:
        counts, total = self.observed.setdefault(self._key(labels), ([0] * (len(self.buckets) + 1), [0.0]))
        counts[next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))] += 1
        total[0] += value

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


class ServerMetrics:
    """The metrics of one server. Names follow TEI; `route` labels tell /predict from /embed."""

    def __init__(self) -> None:
        self.request_count = Counter("te_request_count", "Requests received", ("route", "method"))
        self.request_success = Counter("te_request_success", "Requests answered 200", ("route", "method"))
        self.request_failure = Counter("te_request_failure", "Requests answered with an error, by kind",
                                       ("err",))
        self.request_duration = Histogram("te_request_duration", "Request latency in seconds (server side)",
                                          DURATION_BUCKETS, ("route",))
        self.tokenization_duration = Histogram("te_request_tokenization_duration",
                                               "Tokenization time per request", DURATION_BUCKETS)
        self.queue_duration = Histogram("te_request_queue_duration", "Time an input waited in the queue",
                                        DURATION_BUCKETS)
        self.inference_duration = Histogram("te_request_inference_duration",
                                            "Forward time of the batch that carried the input",
                                            DURATION_BUCKETS)
        self.input_length = Histogram("te_request_input_length", "Tokens per input", TOKEN_BUCKETS)
        self.in_flight = Gauge("te_requests_in_flight", "Requests holding a concurrency permit")
        self.queue_size = Gauge("te_queue_size", "Inputs waiting for a batch")
        self.batch_size = Histogram("te_batch_next_size", "Inputs per batch", SIZE_BUCKETS)
        self.batch_tokens = Histogram("te_batch_next_tokens", "Tokens per batch", TOKEN_BUCKETS)
        self.batch_duration = Histogram("te_batch_inference_duration", "Forward time per batch",
                                        DURATION_BUCKETS)
        self.batch_dropped = Counter("te_batch_dropped_inputs",
                                     "Inputs dropped before compute because their client disconnected")
        self.queue_size.set(0)
        self.in_flight.set(0)

    def all(self) -> list[Metric]:
        return [m for m in vars(self).values() if isinstance(m, Metric)]

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
