#!/usr/bin/env python3
"""Directory sync at scale: the real gateway (target/release/portcullis) syncing 100,000 users
and 1,000 roles from a local server with the shape of Auth0's Management API (users through the
bulk export job, role members by checkpoint pagination) or Okta's (users, groups and group
members by Link pagination).

Reports how long the first full sync took (the gateway's own
portcullis_directory_sync_duration_seconds) and how much CPU the gateway spent on it, how many
entities it made, and the gateway's resident memory with the directory against the same
configuration without [directory].

    cargo build --release
    python3 loadtest/directory_sync.py --kind auth0 --users 100000 --roles 1000
    python3 loadtest/directory_sync.py --kind okta --users 100000 --roles 1000
"""

import argparse
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "portcullis")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tenant:
    def __init__(self, kind, users, roles):
        self.kind = kind
        self.users = users
        self.roles = roles
        self.export = None

    def user(self, i):
        if self.kind == "auth0":
            return {"user_id": f"auth0|user{i}", "email": f"user{i}@example.com"}
        return {"id": f"00uuser{i}", "status": "ACTIVE",
                "profile": {"login": f"user{i}@example.com", "email": f"user{i}@example.com"}}

    def members(self, role):
        return range(role, self.users, self.roles)


def handler_for(tenant, base):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send(self, status, body, headers=()):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            self.rfile.read(length)
            if self.path == "/oauth/token":
                return self.send(200, {"access_token": "t", "expires_in": 86400})
            if self.path == "/api/v2/jobs/users-exports":
                return self.send(201, {"id": "job_1", "status": "pending"})
            self.send(404, {})

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            path = url.path
            if tenant.kind == "auth0":
                return self.auth0(path, query)
            return self.okta(path, query)

        def auth0(self, path, query):
            if path == "/api/v2/users":
                return self.send(200, {"start": 0, "limit": 100, "length": 0, "total": tenant.users, "users": []})
            if path == "/api/v2/jobs/job_1":
                return self.send(200, {"id": "job_1", "status": "completed",
                                       "location": f"{base}/exports/job_1.json.gz"})
            if path == "/exports/job_1.json.gz":
                if tenant.export is None:
                    lines = "".join(json.dumps(tenant.user(i)) + "\n" for i in range(tenant.users))
                    tenant.export = gzip.compress(lines.encode())
                return self.send(200, tenant.export)
            if path == "/api/v2/roles":
                page, per_page = int(query.get("page", 0)), int(query.get("per_page", 50))
                roles = [{"id": f"rol_{r}", "name": f"r{r}"}
                         for r in range(page * per_page, min(tenant.roles, (page + 1) * per_page))]
                return self.send(200, {"start": page * per_page, "limit": per_page, "length": len(roles),
                                       "total": tenant.roles, "roles": roles})
            parts = path.strip("/").split("/")
            if len(parts) == 5 and parts[:3] == ["api", "v2", "roles"] and parts[4] == "users":
                role = int(parts[3].removeprefix("rol_"))
                members = list(tenant.members(role))
                take, start = int(query.get("take", 50)), int(query.get("from", 0))
                body = {"users": [{"user_id": f"auth0|user{i}", "email": f"user{i}@example.com"}
                                  for i in members[start:start + take]]}
                if start + take < len(members):
                    body["next"] = str(start + take)
                return self.send(200, body)
            self.send(404, {})

        def okta(self, path, query):
            limit, after = int(query.get("limit", 200)), int(query.get("after", 0))

            def page(total, item):
                items = [item(i) for i in range(after, min(total, after + limit))]
                headers = []
                if after + limit < total:
                    headers.append(("link", f'<{base}{path}?after={after + limit}&limit={limit}>; rel="next"'))
                return self.send(200, items, headers)

            if path == "/api/v1/users":
                return page(tenant.users, tenant.user)
            if path == "/api/v1/groups":
                return page(tenant.roles, lambda r: {"id": f"00g{r}", "type": "OKTA_GROUP", "profile": {"name": f"r{r}"}})
            parts = path.strip("/").split("/")
            if len(parts) == 5 and parts[:3] == ["api", "v1", "groups"] and parts[4] == "users":
                members = list(tenant.members(int(parts[3].removeprefix("00g"))))
                return page(len(members), lambda i: tenant.user(members[i]))
            self.send(404, {})

    return Handler


def config(directory, kind, api, work):
    gateway = open(os.path.join(ROOT, "portcullis.toml")).read()
    gateway = gateway.replace('policies = "policies"', f'policies = "{os.path.join(ROOT, "policies")}"')
    gateway = gateway.replace('routes = "routes.toml"', f'routes = "{os.path.join(ROOT, "routes.toml")}"')
    lines = []
    for line in gateway.splitlines():
        if line.startswith("listen = "):
            line = f'listen = "127.0.0.1:{free_port()}"'
        lines.append(line)
    gateway = "\n".join(lines) + "\n"
    gateway += f'\n[admin]\nlisten = "127.0.0.1:{free_port()}"\n' if "[admin]" not in gateway else ""
    if directory:
        if kind == "auth0":
            source = ('client_id = "c"\nclient_secret_env = "PORTCULLIS_BENCH_SECRET"\n'
                      'users = { entity_type = "User", id = "user_id", attributes = { email = "email" } }\n'
                      'roles = { entity_type = "Role", id = "name" }\n')
        else:
            source = ('api_token_env = "PORTCULLIS_BENCH_SECRET"\n'
                      'users = { entity_type = "User", id = "id", attributes = { email = "profile.email" } }\n'
                      'groups = { entity_type = "Group", id = "profile.name" }\n')
        gateway += (f'\n[directory]\ninterval_seconds = 3600\ncache_file = "directory.json"\n\n'
                    f'[[directory.sources]]\nname = "{kind}"\nkind = "{kind}"\nurl = "{api}"\n{source}')
    path = os.path.join(work, "directory.toml" if directory else "plain.toml")
    with open(path, "w") as out:
        out.write(gateway)
    return path


def admin_address(path):
    text = open(path).read()
    section = text.split("[admin]", 1)[1]
    return section.split('listen = "', 1)[1].split('"', 1)[0]


def metrics(address):
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def metric(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(path, kind, wait_for_sync):
    env = dict(os.environ, PORTCULLIS_BENCH_SECRET="secret", RUST_LOG="warn")
    process = subprocess.Popen([BINARY, "run", "--config", path], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = admin_address(path)
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            text = metrics(address)
            if text and not wait_for_sync:
                time.sleep(2)
                return None, None, rss_mib(process.pid), cpu_seconds(process.pid)
            entities = metric(text, f'portcullis_directory_entities{{source="{kind}"}}')
            if entities:
                time.sleep(2)
                text = metrics(address)
                duration = metric(text, f'portcullis_directory_sync_duration_seconds{{source="{kind}"}}')
                return entities, duration, rss_mib(process.pid), cpu_seconds(process.pid)
            time.sleep(0.5)
        sys.exit("the sync did not finish within 10 minutes")
    finally:
        process.terminate()
        process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["auth0", "okta"], default="okta")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--roles", type=int, default=1_000)
    args = parser.parse_args()
    if not os.path.exists(BINARY):
        sys.exit(f"{BINARY} is missing: cargo build --release")
    tenant = Tenant(args.kind, args.users, args.roles)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(tenant, base))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="portcullis-directory-")
    try:
        plain = config(False, args.kind, base, work)
        synced = config(True, args.kind, base, work)
        _, _, plain_rss, plain_cpu = run(plain, args.kind, False)
        entities, duration, synced_rss, synced_cpu = run(synced, args.kind, True)
        print(f"kind={args.kind} users={args.users} roles={args.roles}")
        print(f"entities synced: {entities:.0f}")
        print(f"first full sync: {duration:.2f} s (portcullis_directory_sync_duration_seconds); "
              f"the gateway's CPU: {synced_cpu - plain_cpu:.2f} s more than without the directory "
              f"(the rest is the local API server, in Python, on the same machine)")
        print(f"resident memory: {synced_rss:.1f} MiB with the directory, {plain_rss:.1f} MiB without "
              f"(+{synced_rss - plain_rss:.1f} MiB)")
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
