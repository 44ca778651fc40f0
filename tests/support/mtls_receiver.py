"""A webhook receiver that requires a client certificate (Python's ssl,
OpenSSL underneath): tests/tls.rs points the exporter at it.

argv: CERT KEY CLIENT_CA OUT. Prints its port, then appends one JSON line
per request to OUT: the client certificate's common name and the body.
"""
import http.server
import json
import ssl
import sys

cert, key, client_ca, out = sys.argv[1:5]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        peer = self.connection.getpeercert() or {}
        names = dict(pair[0] for pair in peer.get("subject", ()))
        with open(out, "ab") as f:
            line = {"cn": names.get("commonName", ""), "body": body.decode("utf-8", "replace")}
            f.write(json.dumps(line).encode() + b"\n")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
context.load_verify_locations(client_ca)
context.verify_mode = ssl.CERT_REQUIRED
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
