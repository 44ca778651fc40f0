#!/usr/bin/env python3
"""A discrete-event model of `benches/incident.py`'s fairness scenarios:
what any lease policy can reach at that sink, before building it.

The sink serves 4 requests at once at 20 ms + 2 ms a record and queues the
rest in arrival order. Small tenants send single records (flood_part: three
at 50/s, two in lane 0 and one in lane 3; small50: 50 at 2/s, 5 producers
in step, lanes drawn at random); the heavy tenant 25-record requests
(flood_part: 100/s in lane 2; small50_heavy: 1,000/s in lane 1). The
exporter holds at most `limit` leases; a lease is one lane's waiting
records of the small tenants together, or the heavy tenant's alone,
whichever has the lower start tag (start-time fair queueing by records, as
`crates/broker/src/fair/share.rs`), up to 500. Acquire and commit cost
`overhead` each. It prints each policy's small tenants' p50/p99 alone and
beside the heavy tenant, and the heavy tenant's delivered rate.

Policies: the sink's queue at limit 7 (the adaptive limit before it learned
the width), limit 4 (the width) with lanes taken in turn or by their lowest
waiting tag, the heavy tenant kept to 3 of the 4 places, and limit 5.

Usage: python3 benches/fair_model.py [flood_part|small50_heavy] [one_lane]
A model, not a measurement: it has no HTTP, no fsync, no Python sink; it
says which policies can matter, `benches/incident.py` says what the broker does.
"""

import heapq
import random
import sys

PER_REQUEST_S, PER_RECORD_S, SINK_WIDTH, LANES = 0.020, 0.002, 4, 4


def arrivals(scenario, one_lane, heavy, secs, rnd, jitter=0.002):
    """(time, tenant, records, lane) of every request."""
    out = []
    lane = {f"s{i}": 0 if one_lane else rnd.randrange(LANES) for i in range(50)}
    if scenario == "flood_part":
        lane.update({"s0": 0, "s1": 0, "s2": 0 if one_lane else 3, "heavy": 0 if one_lane else 2})
        for tenant in ("s0", "s1", "s2"):
            t = rnd.uniform(0, 0.02)
            while t < secs:
                out.append((t + rnd.uniform(0, jitter), tenant, 1))
                t += 0.02
        heavy_every = 1.0
    else:
        lane["heavy"] = 0 if one_lane else 1
        for producer in range(5):
            tenants = [f"s{i}" for i in range(producer, 50, 5)]
            for i in range(int(secs / 0.05)):
                out.append((i * 0.05 + rnd.uniform(0, jitter), tenants[i % 10], 1))
        heavy_every = 0.1
    if heavy:
        for _ in range(4):
            t = rnd.uniform(0, heavy_every)
            while t < secs:
                out.append((t + rnd.uniform(0, jitter), "heavy", 25))
                t += heavy_every
    return [(t, tenant, n, lane[tenant]) for t, tenant, n in out]


class Model:
    def __init__(self, limit, by_tag=False, heavy_max=None, overhead=0.002):
        self.limit, self.by_tag, self.heavy_max, self.overhead = limit, by_tag, heavy_max, overhead
        self.waiting = {lane: [] for lane in range(LANES)}  # [(arrived, tenant)]
        self.tags, self.clock, self.turn = {}, 0.0, 0
        self.out, self.heavy_out, self.busy, self.queue = 0, 0, 0, []
        self.events, self.seq = [], 0
        self.small_latency, self.heavy_delivered = [], 0

    def at(self, t, kind, data):
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, data))

    def tag(self, tenant):
        return max(self.tags.get(tenant, self.clock), self.clock)

    def tenants(self, lane, heavy_ok):
        ts = {tenant for _, tenant in self.waiting[lane]}
        return ts if heavy_ok else ts - {"heavy"}

    def pick_lane(self, heavy_ok):
        lanes = [(min(self.tag(t) for t in ts), lane) for lane in range(LANES) if (ts := self.tenants(lane, heavy_ok))]
        if not lanes:
            return None
        if self.by_tag:
            return min(lanes)[1]
        ready = {lane for _, lane in lanes}
        lane = next((self.turn + s) % LANES for s in range(LANES) if (self.turn + s) % LANES in ready)
        self.turn = lane + 1
        return lane

    def lease(self, now):
        while self.out < self.limit:
            heavy_ok = self.heavy_max is None or self.heavy_out < self.heavy_max
            lane = self.pick_lane(heavy_ok)
            if lane is None:
                return
            ts = self.tenants(lane, heavy_ok)
            small = ts - {"heavy"}
            take_small = small and ("heavy" not in ts or min(self.tag(t) for t in small) <= self.tag("heavy"))
            mine = [r for r in self.waiting[lane] if (r[1] != "heavy") == bool(take_small)]
            records = mine[:500]
            taken = set(map(id, records))
            self.waiting[lane] = [r for r in self.waiting[lane] if id(r) not in taken]
            self.clock = max(self.clock, min(self.tag(t) for t in {r[1] for r in records}))
            for tenant in {r[1] for r in records}:
                self.tags[tenant] = self.tag(tenant) + sum(1 for r in records if r[1] == tenant)
            heavy = not take_small
            self.out += 1
            self.heavy_out += heavy
            self.at(now + self.overhead, "sink", (records, heavy))

    def run(self, requests, warmup=5.0):
        for t, tenant, n, lane in requests:
            self.at(t, "arrive", (tenant, n, lane))
        while self.events:
            t, _, kind, data = heapq.heappop(self.events)
            if kind == "arrive":
                tenant, n, lane = data
                self.waiting[lane].extend((t, tenant) for _ in range(n))
                self.lease(t)
            elif kind == "sink":
                self.queue.append(data)
            elif kind == "served":
                self.busy -= 1
                self.at(t + self.overhead, "settled", data)
            elif kind == "settled":
                records, heavy = data
                self.out -= 1
                self.heavy_out -= heavy
                for arrived, tenant in records:
                    if arrived < warmup:
                        continue
                    if tenant == "heavy":
                        self.heavy_delivered += 1
                    else:
                        self.small_latency.append(t - arrived)
                self.lease(t)
            while self.queue and self.busy < SINK_WIDTH:
                records, heavy = self.queue.pop(0)
                self.busy += 1
                self.at(t + PER_REQUEST_S + PER_RECORD_S * len(records), "served", (records, heavy))
        xs = sorted(self.small_latency)
        return xs[len(xs) // 2] * 1000, xs[int(len(xs) * 0.99)] * 1000


POLICIES = [
    ("sink queue, limit 7", dict(limit=7)),
    ("limit 4, lanes in turn", dict(limit=4)),
    ("limit 4, lanes by tag", dict(limit=4, by_tag=True)),
    ("limit 4, heavy <= 3", dict(limit=4, heavy_max=3)),
    ("limit 5, heavy <= 3", dict(limit=5, heavy_max=3)),
]


def main():
    scenario = "flood_part" if "flood_part" in sys.argv else "small50_heavy"
    one_lane, secs = "one_lane" in sys.argv, 40.0
    print(f"{scenario}, {'one lane' if one_lane else f'{LANES} lanes'}: small tenants' p50/p99 ms")
    for name, kw in POLICIES:
        alone = Model(**kw).run(arrivals(scenario, one_lane, False, secs, random.Random(1)))
        m = Model(**kw)
        beside = m.run(arrivals(scenario, one_lane, True, secs, random.Random(1)))
        rate = m.heavy_delivered / (secs - 5.0)
        print(f"  {name:24} alone {alone[0]:5.1f}/{alone[1]:5.1f}  beside heavy {beside[0]:5.1f}/{beside[1]:5.1f}"
              f"  x{beside[1] / alone[1]:.2f}  heavy {rate:.0f}/s")


if __name__ == "__main__":
    main()
