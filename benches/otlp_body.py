"""Write one OTLP/HTTP protobuf logs request for benches/otlp_load.sh: 10 log
records of about 200 bytes each (a body string and three attributes), under
one resource and scope, like an SDK's batch.

usage: python otlp_body.py OUT_FILE   (needs opentelemetry-proto: .venv-ci)
"""
import sys

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource


def kv(key, value):
    return KeyValue(key=key, value=AnyValue(string_value=value))


records = [
    LogRecord(
        time_unix_nano=1_700_000_000_000_000_000 + i,
        severity_number=9,
        severity_text="INFO",
        body=AnyValue(string_value="GET /products/42?ref=home 200 user=u-000123 session=s-9f8e7d6c " + "x" * 48),
        attributes=[kv("http.route", "/products/{id}"), kv("user.id", "u-000123"), kv("session.id", "s-9f8e7d6c")],
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
    )
    for i in range(10)
]
request = ExportLogsServiceRequest(
    resource_logs=[
        ResourceLogs(
            resource=Resource(attributes=[kv("service.name", "shop"), kv("host.name", "web-1")]),
            scope_logs=[ScopeLogs(scope=InstrumentationScope(name="shop.http", version="1.0"), log_records=records)],
        )
    ]
)
with open(sys.argv[1], "wb") as f:
    f.write(request.SerializeToString())
