"""An OTLP/HTTP receiver that decodes what it gets with the OpenTelemetry
Python protobuf types (`opentelemetry-proto`, PyPI), for the `otlp+http`
sink's test (tests/otlp_sdk.rs).

- POST /v1/logs, /v1/traces, /v1/metrics (application/x-protobuf): every
  item is kept as (signal, key): a log's `n` attribute (else its body), a
  span's name, a metric's name and its point's `k` attribute. A log whose body holds "reject-me" is
  rejected with partial_success (the rest of its request is kept).
- GET /stats: {"items": [[signal, key], ...], "requests": n}.

usage: otlp_receiver.py PORT_FILE
"""
import http.server
import json
import os
import sys
import threading

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LOCK = threading.Lock()
STATE = {"items": [], "requests": 0}


def body_text(value):
    kind = value.WhichOneof("value")
    return str(getattr(value, kind)) if kind else ""


def logs(data):
    req = ExportLogsServiceRequest.FromString(data)
    kept, rejected = [], 0
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                text = body_text(lr.body)
                n = next((body_text(a.value) for a in lr.attributes if a.key == "n"), None)
                if "reject-me" in text:
                    rejected += 1
                else:
                    kept.append(["logs", n if n is not None else text])
    resp = ExportLogsServiceResponse()
    if rejected:
        resp.partial_success.CopyFrom(ExportLogsPartialSuccess(rejected_log_records=rejected, error_message="reject-me is refused here"))
    return kept, resp


def traces(data):
    req = ExportTraceServiceRequest.FromString(data)
    kept = [["traces", s.name] for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return kept, ExportTraceServiceResponse()


def metrics(data):
    req = ExportMetricsServiceRequest.FromString(data)
    kept = []
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                data_field = m.WhichOneof("data")
                for p in getattr(m, data_field).data_points:
                    k = next((body_text(a.value) for a in p.attributes if a.key == "k"), "")
                    kept.append(["metrics", f"{m.name} {k}"])
    return kept, ExportMetricsServiceResponse()


ROUTES = {"/v1/logs": logs, "/v1/traces": traces, "/v1/metrics": metrics}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, ctype):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            body = json.dumps(STATE).encode()
        self.answer(200, body, "application/json")

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("content-length") or 0))
        route = ROUTES.get(self.path)
        if route is None or self.headers.get("content-type") != "application/x-protobuf":
            return self.answer(404 if route is None else 415, b"", "text/plain")
        try:
            kept, resp = route(data)
        except Exception as e:
            return self.answer(400, str(e).encode(), "text/plain")
        with LOCK:
            STATE["items"].extend(kept)
            STATE["requests"] += 1
        self.answer(200, resp.SerializeToString(), "application/x-protobuf")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
