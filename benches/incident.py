#!/usr/bin/env python3
"""The second incident on loopback: does the in-rate tenants' delivery
latency hold while one tenant floods, when the sink is the bottleneck?

One destination whose webhook sink serves at most 4 requests at once (a
fifth waits) at 20 ms per request plus 2 ms per record (about 2,000
records/s); three in-rate tenants at 50 records/s each; one tenant whose
rate is 100/s sending 2,500 records/s (demoted to `low`). Every record
carries its send time; the sink measures ingest-to-delivery per tenant.

The sink, the in-rate producers and the clock they share run in this
process; the flood runs in a process of its own (see `flood_process`).
Latency counts records sent after a 5 s warm-up. Scenarios (each run RUNS
times, alternating, median reported):
  quiet     the three in-rate tenants alone
  flood     the same, plus the flood
  alone     a healthy destination alone (in-rate load only)
  blackhole the same, beside a second destination whose sink accepts
            connections and never answers

Fairness between tenants of one priority (issue 24), also alternating:
  flood_part the flood tenant at its own rate only (100/s, in 25-record
            requests, nothing demoted): compare with quiet
  small50   50 small tenants at 2 records/s each (single-record requests)
            and a `low` tenant at 10/s
  small50_heavy the same beside one heavy tenant within its own rate
            (1,000 records/s in 25-record requests, same priority)
  small50_backlog the same, the heavy tenant at 3,000/s: past what the sink
            takes, so its backlog grows all run (its throughput is reported)

Each run also reports, for the slowest 3 % of the in-rate/small tenants'
records, how long they took to reach the sink (`slowest3pct_before_sink_ms`:
ingest, the broker, the exporter), how many rode in a request holding
another tenant's batch (`slowest3pct_with_a_batch`) and, for the small
tenants' single-record requests, how long the broker took to acknowledge
them (`slowest3pct_acked_ms`, `acked_p50_ms`, `acked_p99_ms`).

Usage: python3 benches/incident.py [RUNS=3] [SECS=20]
       WEIR_INCIDENT_SCENARIOS=quiet,flood python3 benches/incident.py   (a subset)
       WEIR_INCIDENT_SCENARIOS=quiet,flood_part ...
       WEIR_INCIDENT_SCENARIOS=small50,small50_heavy,small50_backlog ...
       WEIR_INCIDENT_EXPORTER_ARGS="--concurrency 4" ...   the exporter pinned
           at the sink's width
       WEIR_INCIDENT_SHARDS=1 ...   one lane per priority (default: the broker's 4)
       WEIR_INCIDENT_DUMP=dir ...   each run's sink requests (arrival, answer,
           records' tenants and send times) and small records' ack times, as JSON
       WEIR_INCIDENT_BROKER_LOG=file RUST_LOG=... ...   the broker's log there
Needs release binaries: cargo build --release --bin broker --bin exporter
"""

import http.client
import http.server
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("WEIR_BIN_DIR", os.path.join(ROOT, "target", "release"))
CAPACITY, PER_REQUEST_S, PER_RECORD_S = 4, 0.020, 0.002
WARMUP_S = 5
# Extra exporter flags, e.g. WEIR_INCIDENT_EXPORTER_ARGS="--concurrency 4"
# (the sink's own width: no request then queues inside the sink).
EXPORTER_ARGS = os.environ.get("WEIR_INCIDENT_EXPORTER_ARGS", "").split()
# Lanes per priority (WEIR_INCIDENT_SHARDS=1: every tenant in one lane, where
# small tenants' records travel together in floor leases); default: the broker's.
SHARDS = os.environ.get("WEIR_INCIDENT_SHARDS")
# WEIR_INCIDENT_DUMP=dir: each run's sink requests (arrival, answer, records'
# tenants and send times) as JSON in dir, to see where a slow record waited.
DUMP = [] if os.environ.get("WEIR_INCIDENT_DUMP") else None


def wait_ready(port, tries=100, pause=0.1):
    """Poll the broker's /readyz until 200 (bounded)."""
    for _ in range(tries):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(pause)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """A webhook with bounded capacity that records each record's latency."""

    def __init__(self):
        self.gate = threading.Semaphore(CAPACITY)
        self.lock = threading.Lock()
        self.latency = {}  # tenant tag -> [seconds]
        self.count = {}  # tenant tag -> records delivered, warm-up included
        self.measure_from = float("inf")  # records sent before this are warm-up
        # Per request after the warm-up: time waiting for a free slot (s),
        # and its records; says whether leases queue inside the sink.
        self.gate_wait, self.request_records = [], []
        # Per record: (latency, time before it reached the sink, whether its
        # request also held another tenant's batch) — where a slow one waited.
        self.where = {}
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                lines = [l for l in body.split(b"\n") if l.strip()]
                arrived = time.time()
                with sink.gate:
                    waited = time.time() - arrived
                    time.sleep(PER_REQUEST_S + PER_RECORD_S * len(lines))
                now = time.time()
                with sink.lock:
                    if arrived >= sink.measure_from:
                        sink.gate_wait.append(waited)
                        sink.request_records.append(len(lines))
                    recs = []
                    for l in lines:
                        try:
                            recs.append(json.loads(l))
                        except ValueError:
                            continue
                    tags = {r["tag"] for r in recs}
                    if DUMP is not None:
                        DUMP.append((arrived, now, [(r["tag"], r["t"]) for r in recs]))
                    for r in recs:
                        sink.count[r["tag"]] = sink.count.get(r["tag"], 0) + 1
                        if r["t"] >= sink.measure_from:
                            sink.latency.setdefault(r["tag"], []).append(now - r["t"])
                            rode = bool(tags & {"heavy", "flood"}) and r["tag"] not in ("heavy", "flood")
                            sink.where.setdefault(r["tag"], []).append((now - r["t"], arrived - r["t"], rode, r["t"]))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class BlackHole:
    """Accepts connections and reads, never answers."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(128)
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


SMALL = [f"s{i:02}" for i in range(50)]


def broker_config(data_dir, port, blackhole):
    tenants = "".join(
        f'[[tenant]]\nname = "{n}"\ntoken = "{n}-t"\nrate_per_sec = 100.0\nburst = 200\n'
        for n in ["a", "b", "c", "flood"] + SMALL
    )
    tenants += '[[tenant]]\nname = "heavy"\ntoken = "heavy-t"\nrate_per_sec = 100000.0\nburst = 200000\n'
    tenants += '[[tenant]]\nname = "lowt"\ntoken = "lowt-t"\nrate_per_sec = 100.0\nburst = 200\npriority = "low"\n'
    dests = '[[destination]]\nname = "d"\ntopics = ["events"]\ntoken = "d-t"\n'
    if blackhole:
        dests += '[[destination]]\nname = "bh"\ntopics = ["events"]\ntoken = "bh-t"\non_lag_limit = "drop_oldest"\n'
    return (
        f'listen = "127.0.0.1:{port}"\ndata_dir = "{data_dir}"\nadmin_token = "adm"\n'
        f"disk_high_watermark = 1.0\n{f'shards = {SHARDS}' if SHARDS else ''}\n{tenants}[[topic]]\nname = \"events\"\n{dests}"
    )


def producer(port, tenant, rate, per_request, stop, sent):
    """Send `rate` records/s in requests of `per_request` records."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    interval = per_request / rate
    next_at = time.time()
    while not stop.is_set():
        now = time.time()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        t = time.time()
        body = "".join(json.dumps({"tag": tenant, "t": t, "pad": "x" * 120}) + "\n" for _ in range(per_request))
        try:
            conn.request("POST", "/v1/topics/events/records", body=body,
                         headers={"Authorization": f"Bearer {tenant}-t", "Content-Type": "application/x-ndjson"})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                sent[tenant] = sent.get(tenant, 0) + per_request
        except (OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)


def round_robin(port, tenants, rate_each, stop, sent):
    """Single-record requests for each of `tenants` in turn, `rate_each`
    records/s each: one connection per tenant, one thread for them all."""
    conns = {t: http.client.HTTPConnection("127.0.0.1", port, timeout=10) for t in tenants}
    interval = 1.0 / (rate_each * len(tenants))
    next_at = time.time()
    i = 0
    while not stop.is_set():
        now = time.time()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        tenant = tenants[i % len(tenants)]
        i += 1
        t = time.time()
        body = json.dumps({"tag": tenant, "t": t, "pad": "x" * 120}) + "\n"
        try:
            conns[tenant].request("POST", "/v1/topics/events/records", body=body,
                                  headers={"Authorization": f"Bearer {tenant}-t", "Content-Type": "application/x-ndjson"})
            r = conns[tenant].getresponse()
            r.read()
            if r.status == 200:
                sent[tenant] = sent.get(tenant, 0) + 1
                # When the broker acknowledged it: splits "before the sink"
                # into ingest (fsync) and the rest (broker queue, exporter).
                sent.setdefault("_acked", {})[t] = time.time() - t
        except (OSError, http.client.HTTPException):
            conns[tenant] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)


def trace(port):
    while True:
        time.sleep(1)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
        except OSError:
            continue
        keep = [l for l in text.splitlines() if l.startswith(("weir_exporter_concurrency_limit", "weir_exporter_in_flight"))]
        print("  trace:", " ".join(l.split("{")[0][14:] + "{" + l.split("{")[1] for l in keep), flush=True)


def flood_process(port, stop, out, rate, tenant="flood"):
    """The flood, in a process of its own: its threads must not hold the
    GIL that the sink and the in-rate producers' clocks need (in one process
    they delayed the measurement itself by several milliseconds a record)."""
    local_stop, sent = threading.Event(), {}
    threads = [threading.Thread(target=producer, args=(port, tenant, rate / 4, 25, local_stop, sent)) for _ in range(4)]
    run_until(threads, stop, local_stop)
    out.put(sent.get(tenant, 0))


def small_process(port, stop, out):
    """The 50 small tenants (5 threads of 10, 2 records/s each) and the low
    tenant (10/s), in a process of their own."""
    local_stop, sent = threading.Event(), {}
    threads = [threading.Thread(target=round_robin, args=(port, SMALL[i::5], 2, local_stop, sent)) for i in range(5)]
    threads.append(threading.Thread(target=round_robin, args=(port, ["lowt"], 10, local_stop, sent)))
    run_until(threads, stop, local_stop)
    out.put(sent)


def run_until(threads, stop, local_stop):
    """Run `threads` until the parent's `stop`, then stop and join them."""
    for t in threads:
        t.start()
    stop.wait()
    local_stop.set()
    for t in threads:
        t.join()


def quantile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def p99(xs):
    return quantile(xs, 0.99)


def start_load(port, flood, small, heavy):
    """The scenario's producers: threads here for a, b, c; processes for the
    flood, the small tenants and the heavy tenant. Returns (stop, collect)."""
    stop, sent = threading.Event(), {}
    threads = [] if small else [threading.Thread(target=producer, args=(port, t, 50, 1, stop, sent)) for t in "abc"]
    proc_stop = multiprocessing.Event()
    procs = []
    if flood:
        q = multiprocessing.Queue()
        rate = 100 if flood == "in_rate_part" else 2500
        procs.append(("flood", q, multiprocessing.Process(target=flood_process, args=(port, proc_stop, q, rate))))
    if small:
        q = multiprocessing.Queue()
        procs.append(("small", q, multiprocessing.Process(target=small_process, args=(port, proc_stop, q))))
    if heavy:
        q = multiprocessing.Queue()
        procs.append(("heavy", q, multiprocessing.Process(target=flood_process, args=(port, proc_stop, q, heavy, "heavy"))))
    for t in threads:
        t.start()
    for _, _, p in procs:
        p.start()

    def collect():
        stop.set()
        proc_stop.set()
        for t in threads:
            t.join()
        for name, q, p in procs:
            got = q.get(timeout=30)
            if isinstance(got, dict):
                sent.update(got)
            else:
                sent[name] = got
            p.join(timeout=30)
        return sent

    return collect


def run(secs, flood, blackhole, small=False, heavy=0):
    sink = Sink()
    hole = BlackHole() if blackhole else None
    port = free_port()
    procs = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("WEIR_BENCH_DIR")) as tmp:
        cfg = os.path.join(tmp, "broker.toml")
        with open(cfg, "w") as f:
            f.write(broker_config(os.path.join(tmp, "data"), port, blackhole))
        env = dict(os.environ, RUST_LOG="error")
        # WEIR_INCIDENT_BROKER_LOG=file: the broker's log (RUST_LOG as set) there.
        log = os.environ.get("WEIR_INCIDENT_BROKER_LOG")
        benv = dict(env, RUST_LOG=os.environ.get("RUST_LOG", "error")) if log else env
        procs.append(subprocess.Popen([os.path.join(BIN, "broker"), "--config", cfg], env=benv,
                                      stdout=subprocess.DEVNULL, stderr=open(log, "a") if log else subprocess.DEVNULL))
        wait_ready(port)
        exporters = [("d", f"http://127.0.0.1:{sink.port}/")]
        if hole:
            exporters.append(("bh", f"http://127.0.0.1:{hole.port}/"))
        metrics_port = free_port()
        for dest, url in exporters:
            extra = ["--metrics-listen", f"127.0.0.1:{metrics_port}"] if dest == "d" else []
            procs.append(subprocess.Popen(
                [os.path.join(BIN, "exporter"), "--broker", f"http://127.0.0.1:{port}", "--destination", dest,
                 "--token", f"{dest}-t", "--sink", url] + extra + EXPORTER_ARGS, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if os.environ.get("WEIR_INCIDENT_TRACE"):  # the exporter's limit and leases, once a second
            threading.Thread(target=trace, args=(metrics_port,), daemon=True).start()
        collect = start_load(port, flood, small, heavy)
        # Warm-up: the exporter finds its concurrency, the broker its lease sizes.
        time.sleep(WARMUP_S)
        sink.measure_from = time.time()
        time.sleep(secs)
        sent = collect()
        time.sleep(2)  # what is in flight arrives
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    sink.close()
    if hole:
        hole.close()
    if DUMP is not None:
        path = os.path.join(os.environ["WEIR_INCIDENT_DUMP"], f"run-{time.time():.0f}.json")
        with open(path, "w") as f:
            json.dump({"measure_from": sink.measure_from, "requests": DUMP, "acked": sent.get("_acked", {})}, f)
        DUMP.clear()
    return summary(sink, sent, secs, small)


def summary(sink, sent, secs, small):
    tags = SMALL if small else list("abc")
    in_rate = [x for t in tags for x in sink.latency.get(t, [])]
    out = {
        "in_rate_p99_ms": p99(in_rate) * 1000,
        "in_rate_p50_ms": quantile(in_rate, 0.5) * 1000,
        "in_rate_p90_ms": quantile(in_rate, 0.9) * 1000,
        "in_rate_delivered": len(in_rate),
        "in_rate_sent": sum(sent.get(t, 0) for t in tags),
        "sink_requests_per_s": round(len(sink.request_records) / secs, 1),
        "sink_records_per_request": round(statistics.mean(sink.request_records or [0]), 2),
        "sink_gate_wait_p90_ms": round(quantile(sink.gate_wait, 0.9) * 1000, 1),
        "sink_gate_wait_p99_ms": round(p99(sink.gate_wait) * 1000, 1),
    }
    # The slowest 3 % of the small tenants' records: how long they took to
    # reach the sink (the broker, the exporter, ingest's fsync), and how
    # many rode in a request with another tenant's batch.
    slow = sorted((x for t in tags for x in sink.where.get(t, [])), reverse=True)[: max(1, len(in_rate) * 3 // 100)]
    if slow:
        out["slowest3pct_before_sink_ms"] = round(statistics.mean(x[1] for x in slow) * 1000, 1)
        out["slowest3pct_with_a_batch"] = sum(1 for x in slow if x[2])
    acked = sent.get("_acked", {})  # single-record requests: send time -> ack latency
    if acked:
        slow_acks = [acked[x[3]] for x in slow if x[3] in acked]
        out["slowest3pct_acked_ms"] = round(statistics.mean(slow_acks or [float("nan")]) * 1000, 1)
        out["acked_p50_ms"] = round(quantile(list(acked.values()), 0.5) * 1000, 1)
        out["acked_p99_ms"] = round(p99(list(acked.values())) * 1000, 1)
    if small:
        out["heavy_sent"] = sent.get("heavy", 0)
        out["heavy_delivered_per_s"] = round(len(sink.latency.get("heavy", [])) / secs, 1)
        out["low_sent"] = sent.get("lowt", 0)
        out["low_delivered_total"] = sink.count.get("lowt", 0)
    else:
        out["flood_sent"] = sent.get("flood", 0)
        out["flood_delivered"] = len(sink.latency.get("flood", []))
        # The low backlog is served oldest first: most of what the sink took
        # of the flood was sent during the warm-up.
        out["flood_delivered_total"] = sink.count.get("flood", 0)
    return out


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    secs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    results = {}
    scenarios = [("quiet", False, False), ("flood", True, False), ("alone", False, False), ("blackhole", False, True)]
    fairness = [("flood_part", "in_rate_part", False), ("small50", False, False, True, 0),
                ("small50_heavy", False, False, True, 1000), ("small50_backlog", False, False, True, 3000)]
    only = os.environ.get("WEIR_INCIDENT_SCENARIOS")  # e.g. quiet,flood
    if only:
        scenarios = [s for s in scenarios + fairness if s[0] in only.split(",")]
    for i in range(runs):  # alternate the scenarios within each round
        for name, *args in scenarios:
            r = run(secs, *args)
            results.setdefault(name, []).append(r)
            print(f"round {i + 1} {name}: {json.dumps(r)}", flush=True)
    med = {n: statistics.median(r["in_rate_p99_ms"] for r in rs) for n, rs in results.items()}
    for n in med:
        print(f"median in-rate p99 {n}: {med[n]:.1f} ms")
    if "flood" in med and "quiet" in med:
        print(f"flood / quiet: x{med['flood'] / med['quiet']:.2f}")
    if "blackhole" in med and "alone" in med:
        print(f"blackhole / alone: x{med['blackhole'] / med['alone']:.2f}")
    if "flood_part" in med and "quiet" in med:
        print(f"flood_part / quiet: x{med['flood_part'] / med['quiet']:.2f}")
    for heavy in ("small50_heavy", "small50_backlog"):
        if heavy in med and "small50" in med:
            rate = statistics.median(r["heavy_delivered_per_s"] for r in results[heavy])
            low = min(r["low_delivered_total"] for r in results[heavy])
            print(f"{heavy} / small50: x{med[heavy] / med['small50']:.2f}; heavy delivered {rate}/s; low delivered >= {low}")


if __name__ == "__main__":
    main()
