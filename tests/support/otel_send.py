"""Send logs, spans and metrics with the OpenTelemetry Python SDK and its
OTLP exporters (tests/otlp_sdk.rs), and print what was sent as JSON.

usage: otel_send.py http|grpc ENDPOINT TOKEN RUN LOGS SPANS

- http: ENDPOINT is the broker's base URL (http://127.0.0.1:PORT); the
  exporters post protobuf to /v1/logs, /v1/traces, /v1/metrics.
- grpc: ENDPOINT is the gRPC listener's http://127.0.0.1:PORT.

Every signal carries resource attributes of every attribute value type and
`weir.test.run = RUN`; logs and spans carry item attributes of every type.
Metrics: a monotonic counter and an up-down counter (sums), a gauge, an
explicit-bucket histogram and an exponential histogram, each with two
attribute sets (so two data points each). The SDK has no summary
instrument: summaries are covered by tests/fixtures/otlp/*.json.

The last line on stdout is the manifest: {"logs": [...], "spans": [...],
"metrics": {name: points}, "ok": {signal: bool}}.
"""

import json
import sys

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

protocol, endpoint, token, run = sys.argv[1:5]
n_logs, n_spans = int(sys.argv[5]), int(sys.argv[6])
auth = "Bearer " + token

if protocol == "http":
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {"Authorization": auth}
    logs_exporter = OTLPLogExporter(endpoint=endpoint + "/v1/logs", headers=headers, timeout=30)
    span_exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", headers=headers, timeout=30)
    metric_exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", headers=headers, timeout=30)
else:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    headers = (("authorization", auth),)
    kw = dict(endpoint=endpoint, insecure=True, headers=headers, timeout=30)
    logs_exporter = OTLPLogExporter(**kw)
    span_exporter = OTLPSpanExporter(**kw)
    metric_exporter = OTLPMetricExporter(**kw)

# Every attribute value type the SDK takes (string, bool, int, double and
# homogeneous arrays of each).
ATTRS = {
    "s": "café ✓ \"quoted\"",
    "b": True,
    "i": -9007199254740993,
    "d": 2.5,
    "sa": ["x", "y"],
    "ba": [True, False],
    "ia": [1, -2],
    "da": [0.5, 1.5],
}
resource = Resource.create({**ATTRS, "weir.test.run": run, "service.name": "weir-test"})

manifest = {"logs": [], "spans": [], "metrics": {}, "ok": {}}

# Logs: bodies of several AnyValue shapes.
lp = LoggerProvider(resource=resource)
lp.add_log_record_processor(BatchLogRecordProcessor(logs_exporter, max_export_batch_size=50))
logger = lp.get_logger("weir.test.logs", "1.0")
for i in range(n_logs):
    body = {"run": run, "n": i, "nested": {"k": [1, "two", 3.5]}} if i % 2 else f"{run} log {i}"
    logger.emit(
        LogRecord(
            body=body,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={**ATTRS, "n": i},
        )
    )
    manifest["logs"].append(i)
manifest["ok"]["logs"] = lp.force_flush(60_000)

# Spans, each a root span with an event and its own attributes.
tp = TracerProvider(resource=resource)
tp.add_span_processor(BatchSpanProcessor(span_exporter, max_export_batch_size=50))
tracer = tp.get_tracer("weir.test.traces", "1.0")
for i in range(n_spans):
    with tracer.start_as_current_span(f"{run}-span-{i}", attributes={**ATTRS, "n": i}) as span:
        span.add_event("step", {"n": i})
        ctx = span.get_span_context()
        manifest["spans"].append(
            {"name": f"{run}-span-{i}", "trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
        )
manifest["ok"]["traces"] = tp.force_flush(60_000)

# Metrics: five kinds, two attribute sets each.
reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
views = [View(instrument_name="weir.test.exp_histogram", aggregation=ExponentialBucketHistogramAggregation())]
mp = MeterProvider(resource=resource, metric_readers=[reader], views=views)
meter = mp.get_meter("weir.test.metrics", "1.0")
counter = meter.create_counter("weir.test.counter")
updown = meter.create_up_down_counter("weir.test.updown")
gauge = meter.create_gauge("weir.test.gauge")
hist = meter.create_histogram("weir.test.histogram")
exp_hist = meter.create_histogram("weir.test.exp_histogram")
for k in ("a", "b"):
    point = {**ATTRS, "k": k}
    counter.add(3, point)
    updown.add(-2, point)
    gauge.set(7.25, point)
    hist.record(12.5, point)
    exp_hist.record(0.75, point)
for name in ("counter", "updown", "gauge", "histogram", "exp_histogram"):
    manifest["metrics"]["weir.test." + name] = 2
lp.shutdown()
tp.shutdown()
# One collection and export, at shutdown: a flush before it would export the
# same cumulative points a second time.
mp.shutdown()
manifest["ok"]["metrics"] = True
print(json.dumps(manifest), flush=True)
