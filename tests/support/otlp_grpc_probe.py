"""Call the OTLP/gRPC logs service with grpcio and the OpenTelemetry protobuf
stubs (PyPI), and print what came back as JSON (tests/otlp_sdk.rs).

usage: otlp_grpc_probe.py HOST:PORT TOKEN|- RECORDS
Prints {"code": "OK"|<grpc status name>, "message": ..., "retry_info": bool}.
"""
import json
import sys

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

target, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
records = [LogRecord(body=AnyValue(string_value=f"probe {i}")) for i in range(n)]
req = logs_service_pb2.ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])
metadata = [] if token == "-" else [("authorization", "Bearer " + token)]
stub = logs_service_pb2_grpc.LogsServiceStub(grpc.insecure_channel(target))
try:
    resp = stub.Export(req, metadata=metadata, timeout=10)
    out = {"code": "OK", "message": "", "retry_info": False, "rejected": resp.partial_success.rejected_log_records}
except grpc.RpcError as e:
    trailers = dict(e.trailing_metadata() or [])
    details = trailers.get("grpc-status-details-bin", b"")
    out = {"code": e.code().name, "message": e.details(), "retry_info": b"google.rpc.RetryInfo" in details}
print(json.dumps(out))
