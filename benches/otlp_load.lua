-- wrk script: one request = one OTLP/HTTP protobuf logs export of 10 log
-- records (the body file benches/otlp_body.py wrote, path in OTLP_BODY).
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer load-token"
wrk.headers["Content-Type"] = "application/x-protobuf"
local f = assert(io.open(os.getenv("OTLP_BODY"), "rb"))
wrk.body = f:read("*all")
f:close()
