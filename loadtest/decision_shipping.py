#!/usr/bin/env python3
"""Decision-log shipping throughput: the release binary with `[decision_log] sink = "http"`
sending to a local NDJSON collector (Python), under wrk load on a cheap refusal (401, a
malformed token: every request is one decision line). Reports the decision lines per second the
gateway wrote to its spool and shipped, whether any were dropped, how long the spool took to
drain after the load, and checks that the collector received every line the gateway counted as
shipped.

    cargo build --release
    python3 loadtest/decision_shipping.py --seconds 10 --connections 32
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "portcullis")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Received:
    def __init__(self):
        self.lines = 0
        self.posts = 0
        self.lock = threading.Lock()


def collector(received):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with received.lock:
                received.lines += body.count(b"\n")
                received.posts += 1
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

    return Handler


def metric(admin, prefix):
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(prefix):
                    return float(line.split()[-1])
    except OSError:
        return None
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not os.path.exists(BINARY):
        sys.exit(f"{BINARY} is missing: cargo build --release")
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    received = Received()
    collector_port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", collector_port), collector(received))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="portcullis-shipping-")
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    text = open(os.path.join(ROOT, "portcullis.toml")).read()
    text = (text.replace("127.0.0.1:8080", listen).replace("127.0.0.1:9901", admin)
            .replace('routes = "routes.toml"', f'routes = "{ROOT}/routes.toml"')
            .replace('policies = "policies"', f'policies = "{ROOT}/policies"')
            .replace('sink = "stdout"',
                     f'sink = "http"\nurl = "http://127.0.0.1:{collector_port}/ingest"\nspool_dir = "spool"'))
    config = os.path.join(work, "portcullis.toml")
    with open(config, "w") as out:
        out.write(text + "\n[reload]\nwatch = false\n")
    gateway = subprocess.Popen([BINARY, "run", "--config", config], env=dict(os.environ, RUST_LOG="error"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while metric(admin, "portcullis_decision_log_records_total") is None:
            if time.time() > deadline:
                sys.exit("the gateway did not start")
            time.sleep(0.2)
        script = os.path.join(work, "malformed.lua")
        with open(script, "w") as out:
            out.write('wrk.headers["Authorization"] = "Bearer eyJhbGciOiJSUzI1NiJ9.not-a-token"\n')
        started = time.time()
        wrk = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", script,
                              f"http://{listen}/lists/acme-roadmap/tasks/t1"], capture_output=True, text=True)
        load_seconds = time.time() - started
        written = metric(admin, 'portcullis_decision_log_records_total{outcome="written"}')
        shipped_at_end = metric(admin, 'portcullis_decision_log_records_total{outcome="shipped"}')
        drain_start = time.time()
        while True:
            written = metric(admin, 'portcullis_decision_log_records_total{outcome="written"}')
            shipped = metric(admin, 'portcullis_decision_log_records_total{outcome="shipped"}')
            if shipped == written and metric(admin, "portcullis_decision_log_spool_bytes") == 0:
                break
            if time.time() - drain_start > 120:
                sys.exit(f"the spool did not drain: written {written}, shipped {shipped}")
            time.sleep(0.1)
        drain = time.time() - drain_start
        dropped = metric(admin, 'portcullis_decision_log_records_total{outcome="dropped"}')
        requests = [l for l in wrk.stdout.splitlines() if "Requests/sec" in l]
        print(f"load: {args.seconds} s, {args.connections} connections; wrk {requests[0].strip() if requests else '?'}")
        print(f"written to the spool: {written:.0f} lines ({written / load_seconds:.0f}/s during the load)")
        print(f"shipped during the load: {shipped_at_end:.0f} ({shipped_at_end / load_seconds:.0f}/s); "
              f"all {shipped:.0f} shipped {drain:.2f} s after the load "
              f"({shipped / (load_seconds + drain):.0f}/s overall)")
        print(f"dropped: {dropped:.0f}; the collector received {received.lines} lines in {received.posts} POSTs")
        if received.lines < shipped:
            sys.exit("LOSS: the collector has fewer lines than the gateway shipped")
    finally:
        gateway.terminate()
        gateway.wait()
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
