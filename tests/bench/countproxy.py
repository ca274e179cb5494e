#!/usr/bin/env python3
"""A counting HTTP proxy for the test bench: sits between emrboot and moto, forwards every request
unchanged and records what it was, so tests can count AWS calls by Action (moto's own request log
is not reliable enough for that).

    python countproxy.py --upstream http://127.0.0.1:MOTO_PORT [--port 0] [--host 127.0.0.1]

prints `COUNTPROXY_PORT=<n>` once it listens. Standard library only, one thread per connection,
HTTP/1.1 keep-alive towards the client (the AWS SDK's hyper client reuses connections).

Each record: {"method", "path", "service", "action", "params", "status"}:
- action: `Action` from the form body (EC2/query protocol) or the query string, else the
  `X-Amz-Target` header (JSON protocols), else null (S3, REST);
- service: from the SigV4 credential scope of the Authorization header (`ec2`, `s3`, ...), or null;
- params: the query-protocol parameters, first value of each (so tests can check e.g.
  `AllowReassignment=true` on the wire, which moto itself ignores);
- status: the upstream's HTTP status, or 502 when the upstream could not be reached.

Control API (not forwarded): GET /_count/log (the records, oldest first), DELETE /_count/log
(clears them; answers the records it dropped), GET /_count/health.
"""
import argparse
import http.client
import json
import re
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "proxy-connection"}
SERVICE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.records = []

    def add(self, rec):
        with self.lock:
            self.records.append(rec)

    def snapshot(self, clear=False):
        with self.lock:
            out = list(self.records)
            if clear:
                self.records.clear()
            return out


def classify(method, path, headers, body):
    """(service, action, params) of one request."""
    m = SERVICE_RE.search(headers.get("Authorization") or "")
    service = m.group(1) if m else None
    params = {}
    query = urllib.parse.urlsplit(path).query
    if query:
        params.update({k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()})
    ctype = (headers.get("Content-Type") or "").lower()
    if body and "application/x-www-form-urlencoded" in ctype:
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            form = {}
        params.update({k: v[0] for k, v in form.items()})
    action = params.get("Action") or headers.get("X-Amz-Target")
    if "Action" not in params:
        params = {}  # a REST request's query string is not an API call's parameters
    return service, action, params


def make_handler(upstream, recorder):
    up = urllib.parse.urlsplit(upstream)
    if up.scheme != "http" or not up.hostname:
        raise ValueError(f"--upstream must be http://host:port, not {upstream!r}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the second waits for the client's
        # delayed ACK (40 ms a response). Real IMDS and EC2 answer without that stall.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):
            sys.stderr.write("countproxy: " + (fmt % args) + "\n")

        def read_body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def reply(self, status, data, ctype="application/json", extra=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def control(self, method, path):
            if (method, path) == ("GET", "/_count/health"):
                return self.reply(200, b"ok", "text/plain")
            if path == "/_count/log" and method in ("GET", "DELETE"):
                return self.reply(200, json.dumps(recorder.snapshot(clear=method == "DELETE")).encode())
            return self.reply(404, json.dumps({"error": "no such control endpoint"}).encode())

        def forward(self, method):
            body = self.read_body()
            path = self.path
            if path.startswith("/_count/"):
                return self.control(method, path.split("?", 1)[0])
            service, action, params = classify(method, path, self.headers, body)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or method in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            status, reason, resp_headers, data = 502, "Bad Gateway", [], b""
            conn = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=120)
            try:
                conn.request(method, path, body=body if body or method in ("POST", "PUT", "PATCH") else None,
                             headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status, reason = resp.status, resp.reason
                resp_headers = [(k, v) for k, v in resp.getheaders()
                                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
                if method == "HEAD":
                    length = resp.getheader("Content-Length")
                    if length is not None:
                        resp_headers.append(("Content-Length", length))
            except OSError as e:
                data = f"countproxy: upstream {upstream} failed: {e!r}".encode()
                resp_headers = [("Content-Type", "text/plain")]
            finally:
                conn.close()
            recorder.add({"method": method, "path": path.split("?", 1)[0], "service": service,
                          "action": action, "params": params, "status": status})
            self.send_response(status, reason)
            for k, v in resp_headers:
                self.send_header(k, v)
            if method != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

    for m in ("GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"):
        setattr(Handler, "do_" + m, lambda self, m=m: self.forward(m))
    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of moto")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    server = ThreadingHTTPServer((a.host, a.port), make_handler(a.upstream, Recorder()))
    server.daemon_threads = True
    print(f"COUNTPROXY_PORT={server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
