#!/usr/bin/env python3
"""A logging HTTP proxy in front of the simulated OpenStack, for finding out what real
CAPO/gophercloud asks of it (lab/NOTES.md lists what fails).

  osproxy.py --upstream http://127.0.0.1:SIM --listen-port 0 --log FILE [--retry-without-slash]

Every request is logged as one line: method, path?query, status, and, for a status >= 400,
the request body and the response body (both cut to 600 bytes). Keystone's token response
is rewritten so that its catalog points back at the proxy (otherwise clients would bypass
it). `--retry-without-slash` turns on lab-only workarounds for the gaps found, so that later
gaps can be seen: a GET of an endpoint root with a trailing slash (gophercloud's
normalised catalog URL) that the simulator answers 404 is retried without the slash; a
Neutron list whose attribute filters (?id=, ?name=, ...) the sim ignored is filtered here;
Cinder timestamps the sim writes with a trailing Z are rewritten to Cinder's own layout.
Each is logged as a WORKAROUND. It fixes nothing in the simulator; real OpenStack answers both forms.
Prints `osproxy: listening on http://127.0.0.1:PORT` once bound.
"""
import argparse
import http.client
import json
import re
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-authenticate", "content-length", "host"}


# Cinder writes its timestamps without a zone ("2026-12-02T13:24:38.000000"); gophercloud
# parses volumes' created_at/updated_at/attached_at with exactly that layout.
CINDER_TIME = re.compile(rb'"(created_at|updated_at|attached_at|launched_at)":\s*"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z"')

# Query parameters of a Neutron list that are not attribute filters.
NOT_FILTERS = {"fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir",
               "tags", "tags-any", "not-tags", "not-tags-any"}


def neutron_filter(split, data):
    """Apply a Neutron collection GET's attribute filters (?id=..&name=..) that the sim
    ignored; returns the body and the filters that removed something."""
    if not split.path.startswith("/networking/v2.0/") or not split.query:
        return data, []
    try:
        doc = json.loads(data)
    except ValueError:
        return data, []
    keys = [k for k, v in doc.items() if isinstance(v, list)] if isinstance(doc, dict) else []
    if len(keys) != 1:
        return data, []
    items = doc[keys[0]]
    dropped = []
    for k, vals in urllib.parse.parse_qs(split.query, keep_blank_values=True).items():
        if k in NOT_FILTERS:
            continue
        def ok(it):
            if k not in it:
                return True
            v = it[k]
            v = str(v).lower() if isinstance(v, bool) else str(v)
            return v in vals
        kept = [it for it in items if ok(it)]
        if len(kept) != len(items):
            dropped.append(f"{k}={','.join(vals)} ({len(items)}->{len(kept)})")
        items = kept
    if not dropped:
        return data, []
    doc[keys[0]] = items
    return json.dumps(doc).encode(), dropped


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--listen-port", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--retry-without-slash", action="store_true")
    a = ap.parse_args()
    up = urllib.parse.urlsplit(a.upstream)
    lock = threading.Lock()
    logf = open(a.log, "a", buffering=1)

    def log(line):
        with lock:
            logf.write(line + "\n")

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self, path, body):
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            conn.request(self.command, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            conn.close()
            return r, data

        def handle_any(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            path = self.path
            r, data = self.forward(path, body)
            note = ""
            split = urllib.parse.urlsplit(path)
            if (a.retry_without_slash and r.status == 404 and self.command == "GET"
                    and split.path.endswith("/") and len(split.path) > 1):
                first = r.status
                path2 = urllib.parse.urlunsplit(split._replace(path=split.path.rstrip("/")))
                r, data = self.forward(path2, body)
                note = f" [WORKAROUND: {first} with the trailing slash; retried as {path2}]"
            if a.retry_without_slash and self.command == "GET" and r.status == 200:
                data, dropped = neutron_filter(split, data)
                if dropped:
                    note += f" [WORKAROUND: the sim ignored filter(s) {dropped}; proxy filtered the list]"
            if a.retry_without_slash and split.path.startswith("/volume/") and r.status < 300:
                data, n = CINDER_TIME.subn(rb'"\1": "\2.000000"', data)
                if n:
                    note += f" [WORKAROUND: {n} Cinder timestamp(s) ending in Z rewritten to Cinder's format]"
            if split.path.endswith("/auth/tokens") and self.command == "POST":
                me = f"http://127.0.0.1:{self.server.server_address[1]}"
                data = data.replace(a.upstream.rstrip("/").encode(), me.encode())
            line = f"{self.command} {path} -> {r.status}{note}"
            if r.status >= 400:
                line += f"\n    request: {(body or b'')[:600]!r}\n    response: {data[:600]!r}"
            log(line)
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v.replace(a.upstream.rstrip("/"), f"http://127.0.0.1:{self.server.server_address[1]}"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any

    srv = ThreadingHTTPServer(("127.0.0.1", a.listen_port), H)
    print(f"osproxy: listening on http://127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
