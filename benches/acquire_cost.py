#!/usr/bin/env python3
"""What an acquire costs as more tenants have data waiting (issue 24).

A broker (release build) with TENANTS tenants configured (default 10,000),
`shards = 1` so every tenant's records share one lane (the index and the
share look at every tenant waiting there: the worst case), one destination.
For each ACTIVE count (1, 100, 1,000) the same backlog of 20,000 records is
written by that many tenants, interleaved, in requests of 10; then LEASES
acquires of at most 10 records are made, each committed at once, over one
kept-alive connection, and the acquire's round trip is timed. The broker's
own CPU time over the acquires (from /proc) is reported per acquire too, so
loopback HTTP is not mistaken for the acquire's work.

Usage: python3 benches/acquire_cost.py [TENANTS=10000] [LEASES=2000] [ACTIVE=1,100,1000]
       WEIR_ACQUIRE_SHARDS=4 WEIR_ACQUIRE_JOINT=1 WEIR_ACQUIRE_BATCH=2 ...   joint leases:
           four lanes, requests of 2 records (short runs), acquires that
           take joint leases (each looks at every lane of the priority)
Needs: cargo build --release --bin broker   (or WEIR_BIN_DIR)
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from incident import free_port, wait_ready  # benches/ is this script's directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("WEIR_BIN_DIR", os.path.join(ROOT, "target", "release"))
BACKLOG = 20_000
SHARDS = int(os.environ.get("WEIR_ACQUIRE_SHARDS", "1"))
JOINT = os.environ.get("WEIR_ACQUIRE_JOINT", "0") == "1"
BATCH = int(os.environ.get("WEIR_ACQUIRE_BATCH", "10"))


def config(data, port, tenants):
    out = [f'listen = "127.0.0.1:{port}"\ndata_dir = "{data}"\nadmin_token = "adm"\nshards = {SHARDS}\n'
           "disk_high_watermark = 1.0\n"]
    for i in range(tenants):
        out.append(f'[[tenant]]\nname = "t{i:05d}"\ntoken = "tok-{i:05d}"\nrate_per_sec = 1000000.0\nburst = 2000000\n')
    out.append('[[topic]]\nname = "events"\n[[destination]]\nname = "d"\ntopics = ["events"]\ntoken = "d-t"\n')
    return "".join(out)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(conn, path, token, body, ctype="application/json"):
    conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {token}", "Content-Type": ctype})
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def run(tenants, active, leases):
    port = free_port()
    with tempfile.TemporaryDirectory(dir=os.environ.get("WEIR_BENCH_DIR")) as tmp:
        cfg = os.path.join(tmp, "broker.toml")
        with open(cfg, "w") as f:
            f.write(config(os.path.join(tmp, "data"), port, tenants))
        proc = subprocess.Popen([os.path.join(BIN, "broker"), "--config", cfg], env=dict(os.environ, RUST_LOG="error"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port, tries=600, pause=0.05)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            per = BACKLOG // active
            for batch in range(0, per, BATCH):
                for i in range(active):
                    body = "".join(json.dumps({"t": i, "n": batch + k}) + "\n" for k in range(min(BATCH, per - batch)))
                    status, _ = post(conn, "/v1/topics/events/records", f"tok-{i:05d}", body, "application/x-ndjson")
                    assert status == 200, status
            times = []
            cpu0 = cpu_seconds(proc.pid)
            for _ in range(leases):
                t0 = time.perf_counter()
                status, data = post(conn, "/v1/destinations/d/leases", "d-t", json.dumps({"max_records": 10, "wait_ms": 0, "joint": JOINT}))
                times.append(time.perf_counter() - t0)
                lease = json.loads(data)["lease"]
                if lease is None:
                    break
                post(conn, f"/v1/destinations/d/leases/{lease['id']}/commit", "d-t", "{}")
            cpu = cpu_seconds(proc.pid) - cpu0
            return statistics.median(times) * 1e6, cpu / len(times) * 1e6, len(times)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main():
    tenants = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    leases = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    actives = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1,100,1000").split(",")]
    for active in actives:
        rtt, cpu, n = run(tenants, active, leases)
        print(f"{tenants} tenants configured, {active} with data waiting: acquire round trip median {rtt:.0f} us, "
              f"broker CPU per acquire+commit {cpu:.0f} us ({n} leases)", flush=True)


if __name__ == "__main__":
    main()
