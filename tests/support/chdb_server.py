"""A minimal handler of ClickHouse's HTTP interface in front of chdb (a
current ClickHouse engine, embedded: PyPI `chdb`), for the tests of the
`clickhouse+http` sinks (tests/otlp_clickhouse.rs). docs/testing.md says
what is the real engine and what is this handler.

- POST or GET `/?query=SQL[&setting=value...]`, the body appended to the
  query as its data (an INSERT's rows); without `query`, the body is the SQL.
- Every other query-string parameter is a setting, passed to the engine as
  it is: `INSERT ... SETTINGS k='v' FORMAT ...` (`database` and
  `default_format` excepted: one database, TabSeparated answers).
- 200 with the engine's answer; an engine error answers 500 with its text
  ("Code: N. DB::Exception: ..."), as ClickHouse does.
- CHDB_INSERT_ANSWER_DELAY_MS (environment): after an INSERT ran, wait this
  long before answering — the window between a sink's insert and its
  commit that a test kills the exporter in.

usage: chdb_server.py PORT_FILE [SQL_FILE...]  (the files' statements run
first, separated by ';' at line ends). Writes the port to PORT_FILE.
"""
import http.server
import re
import sys
import threading
import urllib.parse

import os
import time

import chdb.session

INSERT_ANSWER_DELAY = int(os.environ.get("CHDB_INSERT_ANSWER_DELAY_MS", "0")) / 1000.0

SESSION = chdb.session.Session()
LOCK = threading.Lock()


def run(sql):
    with LOCK:
        return SESSION.query(sql, "TabSeparated")


def with_settings(sql, settings):
    if not settings:
        return sql
    clause = "SETTINGS " + ", ".join(f"{k} = '{v}'" for k, v in settings.items()) + " "
    m = re.search(r"\bFORMAT\b", sql, re.IGNORECASE)
    if sql.lstrip().upper().startswith("INSERT") and m:
        return sql[: m.start()] + clause + sql[m.start():]
    return sql + " " + clause


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def serve(self):
        url = urllib.parse.urlparse(self.path)
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        query = params.pop("query", None)
        params.pop("database", None)
        params.pop("default_format", None)
        sql = body if query is None else query + "\n" + body
        try:
            out = run(with_settings(sql, params))
            status, text = 200, str(out) if out is not None else ""
            if INSERT_ANSWER_DELAY and sql.lstrip().upper().startswith("INSERT"):
                time.sleep(INSERT_ANSWER_DELAY)
        except Exception as e:  # the engine's own error text
            status, text = 500, str(e)
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "text/tab-separated-values; charset=UTF-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = serve
    do_GET = serve


def main():
    for path in sys.argv[2:]:
        for stmt in re.split(r";\s*\n", open(path).read()):
            if stmt.strip() and not all(l.strip().startswith("--") or not l.strip() for l in stmt.splitlines()):
                run(stmt)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
