"""A webhook receiver that verifies every request with the receivers' own
libraries, for tests/webhooks.rs.

- `standardwebhooks` (PyPI): `Webhook(secret).verify(body, headers)` for
  every request (batch bodies with json_parse=False: NDJSON is not one JSON
  document); event bodies with json_parse=True (the library parses them).
- `svix`: `Webhook(secret).verify(body, headers)` for event bodies.
- ed25519 (`v1a`) with `cryptography`, by the specification's rule: an
  entry verifies `{id}.{timestamp}.{body}` under the public key.
- A gzip body is verified by the specification's HMAC rule over the bytes
  received (the reference library decodes the body as UTF-8 text, which
  compressed bytes are not), then inflated.

A request that fails verification is answered 401 and its reason kept.
Requests are deduplicated on `webhook-id`; each kept record is stored as
base64 of its bytes after unframing (`{"payload_b64": ...}` stands for the
decoded bytes, anything else is the record).

Control: GET /stats (JSON), POST /config (JSON: `secret`, `fail_every`).
Usage: webhook_receiver.py PORT_FILE SECRET [whpk_PUBLIC_KEY]
"""

import base64
import gzip
import hashlib
import hmac
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import standardwebhooks
import svix
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

LOCK = threading.Lock()
STATE = {
    "secret": None,
    "public_key": None,
    "fail_every": 0,
    "requests": 0,
    "verified": 0,
    "failures": [],
    "duplicates": 0,
    "seen": set(),
    "records": [],
    "v1_counts": [],
    "v1a_verified": 0,
    "event_requests": 0,
    "authorization": set(),
}


def unframe(line: bytes) -> bytes:
    try:
        value = json.loads(line)
    except ValueError:
        return line
    if isinstance(value, dict) and list(value.keys()) == ["payload_b64"] and isinstance(value["payload_b64"], str):
        return base64.b64decode(value["payload_b64"], validate=True)
    return line


def check_v1_by_rule(secret: str, msg_id: str, ts: str, body: bytes, signatures: str) -> bool:
    key = base64.b64decode(secret[len("whsec_"):])
    expected = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    for entry in signatures.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(sig), expected):
            return True
    return False


def check_v1a(public_key: str, msg_id: str, ts: str, body: bytes, signatures: str) -> bool:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len("whpk_"):]))
    for entry in signatures.split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(sig), f"{msg_id}.{ts}.".encode() + body)
            return True
        except InvalidSignature:
            pass
    return False


def verify(headers: dict, body: bytes, secret: str, public_key) -> str:
    """Why the request does not verify, or an empty string."""
    msg_id, ts, sigs = headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""), headers.get("webhook-signature", "")
    if headers.get("idempotency-key") != msg_id or not msg_id:
        return "idempotency-key and webhook-id differ"
    if not headers.get("user-agent", "").startswith("weir-exporter/"):
        return "user-agent is not weir-exporter/<version>"
    event = headers.get("content-type") == "application/json"
    try:
        if headers.get("content-encoding") == "gzip":
            if not check_v1_by_rule(secret, msg_id, ts, body, sigs):
                return "gzip body: no v1 signature verifies over the bytes received"
        else:
            standardwebhooks.Webhook(secret).verify(body, headers, json_parse=event)
            if event:
                svix.Webhook(secret).verify(body, headers)
    except Exception as e:  # the libraries' own verdicts, kept as reasons
        return f"{type(e).__name__}: {e}"
    if public_key and not check_v1a(public_key, msg_id, ts, body, sigs):
        return "no v1a signature verifies"
    return ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            out = {k: v for k, v in STATE.items() if k not in ("seen", "authorization")}
            out["authorization"] = sorted(STATE["authorization"])
        self.reply(200, json.dumps(out).encode())

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/config":
            with LOCK:
                STATE.update(json.loads(body))
            return self.reply(200)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            STATE["requests"] += 1
            n, fail_every = STATE["requests"], STATE["fail_every"]
            secret, public_key = STATE["secret"], STATE["public_key"]
            STATE["authorization"].add(headers.get("authorization", ""))
        why = verify(headers, body, secret, public_key)
        with LOCK:
            if why:
                STATE["failures"].append(why)
                return self.reply(401, json.dumps({"error": why}).encode())
            STATE["verified"] += 1
            STATE["v1_counts"].append(sum(1 for e in headers["webhook-signature"].split(" ") if e.startswith("v1,")))
            if fail_every and n % fail_every == 0:
                return self.reply(503)
            if headers["webhook-id"] in STATE["seen"]:
                STATE["duplicates"] += 1
                return self.reply(200)
            STATE["seen"].add(headers["webhook-id"])
            plain = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
            if headers.get("content-type") == "application/json":
                STATE["event_requests"] += 1
                records = [unframe(plain)]
            else:
                records = [unframe(line) for line in plain.split(b"\n") if line]
            STATE["records"].extend(base64.b64encode(r).decode() for r in records)
        self.reply(200)


def main() -> None:
    port_file, secret = sys.argv[1], sys.argv[2]
    STATE["secret"] = secret
    STATE["public_key"] = sys.argv[3] if len(sys.argv) > 3 else None
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Renamed into place: the test never reads a half-written port.
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
