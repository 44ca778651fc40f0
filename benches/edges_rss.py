#!/usr/bin/env python3
"""Broker RSS under hostile load (issue 14): 10,000 idle connections, then
1,000 concurrent maximum-size requests. Usage:

    cargo build --release -p weir-broker
    ulimit -n 65536; python3 benches/edges_rss.py [target/release/broker]

Prints the broker's RSS before, at its peak, and after, and the answers'
statuses. With the default memory_budget_bytes (1 GiB) most maximum-size
requests are refused at once with 503 overloaded; RSS stays near the budget.
"""
import asyncio, os, re, subprocess, sys, tempfile, time

BROKER = sys.argv[1] if len(sys.argv) > 1 else "target/release/broker"
MAX_BODY = 8 << 20

def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024

async def sampler(pid, stop, peak):
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.05)

async def idle_connections(port, n):
    conns = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        conns.append(w)
    return conns

def body():
    rec = b'{"pad":"' + b"x" * ((1 << 20) - 64) + b'"}\n'
    out = bytearray()
    while len(out) + len(rec) <= MAX_BODY:
        out += rec
    return bytes(out)

async def one_request(port, payload, statuses):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        head = (f"POST /v1/topics/events/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
                f"Content-Type: application/x-ndjson\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
        w.write(head)
        try:
            w.write(payload)
            await w.drain()
        except (ConnectionError, OSError):
            pass  # refused before the body was read: the answer is already there
        try:
            line = await asyncio.wait_for(r.readline(), 120)
        except (ConnectionError, OSError):
            line = b""
        key = line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "reset before the answer was read"
        statuses[key] = statuses.get(key, 0) + 1
        w.close()
    except Exception as e:
        statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1

async def main():
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "b.toml")
    with open(cfg, "w") as f:
        f.write(f'listen = "127.0.0.1:0"\ndata_dir = "{tmp}/data"\nadmin_token = "a"\ndisk_high_watermark = 1.0\n'
                '[[tenant]]\nname = "t"\ntoken = "t"\nrate_per_sec = 1e9\nburst = 1000000000\n[[topic]]\nname = "events"\n')
    p = subprocess.Popen([BROKER, "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = None
    for line in p.stdout:
        m = re.search(r"listening on http://127.0.0.1:(\d+)", line)
        if m:
            port = int(m.group(1)); break
    time.sleep(1)
    print(f"broker idle: {rss_mb(p.pid):.1f} MiB")
    conns = await idle_connections(port, 10_000)
    await asyncio.sleep(2)
    print(f"with 10,000 idle connections: {rss_mb(p.pid):.1f} MiB")
    for w in conns:
        w.close()
    await asyncio.sleep(2)
    payload = body()
    statuses, peak, stop = {}, [0.0], asyncio.Event()
    s = asyncio.create_task(sampler(p.pid, stop, peak))
    t0 = time.time()
    await asyncio.gather(*(one_request(port, payload, statuses) for _ in range(1000)))
    stop.set(); await s
    print(f"1,000 concurrent {len(payload)}-byte requests: peak {peak[0]:.1f} MiB, {time.time()-t0:.1f} s, statuses {dict(sorted(statuses.items()))}")
    await asyncio.sleep(2)
    print(f"after: {rss_mb(p.pid):.1f} MiB")
    p.terminate(); p.wait(30)

asyncio.run(main())
