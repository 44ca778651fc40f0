-- wrk script: one request = 10 NDJSON records of ~200 bytes.
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer load-token"
wrk.headers["Content-Type"] = "application/x-ndjson"
local rec = '{"event":"page_view","user":"u-000123","session":"s-9f8e7d6c","url":"https://example.com/products/42?ref=home","ua":"Mozilla/5.0","ts":1700000000000,"pad":"' .. string.rep("x", 48) .. '"}'
local lines = {}
for i = 1, 10 do lines[i] = rec end
wrk.body = table.concat(lines, "\n") .. "\n"
