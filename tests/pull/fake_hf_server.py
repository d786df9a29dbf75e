#!/usr/bin/env python3
"""Loopback HTTP server for the `dsv4 pull` tests: serves files from --root with Range support
and scripted misbehaviour chosen by the first path segment.

URL: /<options>/<file>, <options> a comma-separated list ("-" for none):
  id=X          separates the per-path state of different tests (counters below)
  norange       ignore Range (always 200 with the whole file)
  drop=N        first response only: send N body bytes, then cut the connection
  dropall=N     every response: send at most N body bytes, then cut the connection
  fail500=K     the first K requests answer 500
  redirect      answer 302 to the same path without "redirect" (with Hugging Face's
                x-linked-size / x-linked-etag on the 302); redirecthost: to host "localhost"
  etag=good|bad|none   ETag on the final response (default good: the file's SHA-256)
  linked=good|bad      x-linked-etag on the redirect (default good)
  badrange      206 answers start 1000 bytes after the requested offset
  auth=T        require "Authorization: Bearer T" (else 401)
  slow=MS       sleep MS milliseconds per 64 KiB

Each request is appended to --log as one JSON line: seq (arrival order; lines are written when
a response ends, so may be out of order), path, range, status, auth, sent.
Writes its port to --port-file once listening; exits when its parent dies or after
--max-seconds, so a crashed test never leaves it behind.
"""
import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
STATE = {}
LOCK = threading.Lock()
SHA = {}


def file_sha(path):
    with LOCK:
        if path not in SHA:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            SHA[path] = h.hexdigest()
        return SHA[path]


def bump(key):
    with LOCK:
        STATE[key] = STATE.get(key, 0) + 1
        return STATE[key]


def log(entry):
    with LOCK:
        with open(ARGS.log, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def commit(self):
        # Logged before the last byte reaches the client, so a test that has seen the response
        # end also sees its log line.
        if not self.entry_logged:
            self.entry_logged = True
            log(self.entry)

    def simple(self, status, body=b"", headers=()):
        self.entry["status"] = status
        self.commit()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.entry = {"seq": bump("__seq__"), "path": self.path, "range": self.headers.get("Range"),
                      "auth": self.headers.get("Authorization"), "status": 0, "sent": 0}
        self.entry_logged = False
        try:
            self.serve(self.entry)
        finally:
            self.commit()

    def serve(self, entry):
        parts = self.path.split("/")
        if len(parts) != 3 or parts[0] != "":
            return self.simple(404, b"bad path\n")
        opts_s, name = parts[1], parts[2]
        opts = {}
        for o in opts_s.split(","):
            if o and o != "-":
                k, _, v = o.partition("=")
                opts[k] = v
        n = bump(self.path)
        path = os.path.join(ARGS.root, name)
        if "/" in name or not os.path.isfile(path):
            return self.simple(404, b"Entry not found\n")
        sha = file_sha(path)
        size = os.path.getsize(path)

        if "auth" in opts and self.headers.get("Authorization") != "Bearer " + opts["auth"]:
            return self.simple(401, b"Invalid credentials\n")
        if "fail500" in opts and n <= int(opts["fail500"]):
            return self.simple(500, b"Internal Error (scripted)\n")
        if "redirect" in opts or "redirecthost" in opts:
            host = "localhost" if "redirecthost" in opts else "127.0.0.1"
            rest = ",".join(o for o in opts_s.split(",")
                            if o not in ("redirect", "redirecthost") and not o.startswith("auth="))
            loc = "http://%s:%d/%s/%s" % (host, self.server.server_port, rest or "-", name)
            linked = sha if opts.get("linked", "good") == "good" else "0" * 64
            return self.simple(302, b"", [("Location", loc), ("x-linked-size", str(size)),
                                          ("x-linked-etag", '"%s"' % linked)])

        start = 0
        status = 200
        rng = self.headers.get("Range")
        if rng and "norange" not in opts:
            spec = rng.strip()
            if not spec.startswith("bytes=") or not spec[6:].endswith("-"):
                    return self.simple(400, b"only open-ended ranges\n")
            start = int(spec[6:-1])
            if start >= size:
                    return self.simple(416, b"", [("Content-Range", "bytes */%d" % size)])
            status = 206
        send_from = start + (1000 if "badrange" in opts and status == 206 else 0)
        send_from = min(send_from, size - 1) if size else 0

        headers = []
        etag = opts.get("etag", "good")
        if etag == "good":
            headers.append(("ETag", '"%s"' % sha))
        elif etag == "bad":
            headers.append(("ETag", '"%s"' % ("1" * 64)))
        if status == 206:
            headers.append(("Content-Range", "bytes %d-%d/%d" % (send_from, size - 1, size)))
        headers.append(("Accept-Ranges", "bytes"))
        length = size - send_from

        limit = None
        if "drop" in opts and n == 1:
            limit = int(opts["drop"])
        if "dropall" in opts:
            limit = int(opts["dropall"])
        slow = int(opts.get("slow", "0")) / 1000.0

        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        entry["status"] = status
        with open(path, "rb") as f:
            f.seek(send_from)
            sent = 0
            while sent < length:
                want = min(65536, length - sent)
                if limit is not None:
                    want = min(want, limit - sent)
                    if want <= 0:
                        break
                chunk = f.read(want)
                if not chunk:
                    break
                final = sent + len(chunk) >= (length if limit is None else min(length, limit))
                if final:
                    entry["sent"] = sent + len(chunk)
                    self.commit()
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
                entry["sent"] = sent
                if slow:
                    time.sleep(slow)
        if sent < length:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def watchdog(parent, deadline):
    while True:
        if os.getppid() != parent or time.time() > deadline:
            os._exit(0)
        time.sleep(0.2)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--parent", type=int, default=os.getppid())
    p.add_argument("--max-seconds", type=float, default=300)
    ARGS = p.parse_args()
    threading.Thread(target=watchdog, args=(ARGS.parent, time.time() + ARGS.max_seconds),
                     daemon=True).start()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = ARGS.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_port))
    os.rename(tmp, ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
