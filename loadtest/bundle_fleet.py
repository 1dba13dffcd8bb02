#!/usr/bin/env python3
"""How long a new signed bundle takes to reach every gateway of a local fleet: Debian's
docker-registry on loopback, three release gateways with `[bundle]` polling it, then version 2
built, pushed and signed with the release binary; the time from the signature's push to the
moment each gateway's /readyz reports version 2.

    cargo build --release
    python3 loadtest/bundle_fleet.py --gateways 3 --poll-seconds 5 --rounds 3
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "portcullis")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def portcullis(*args):
    result = subprocess.run([BINARY, *args], capture_output=True, text=True, env=dict(os.environ, RUST_LOG="off"))
    if result.returncode != 0:
        sys.exit(f"portcullis {' '.join(args)}: {result.stderr}{result.stdout}")
    return result.stdout.strip()


def wait_for(what, check, within=60):
    deadline = time.time() + within
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"{what} did not happen within {within} s")


def bundle_version(admin):
    try:
        with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as response:
            return json.load(response)["bundle"]["version"]
    except urllib.error.HTTPError as error:
        return json.load(error).get("bundle", {}).get("version")
    except OSError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--poll-seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not os.path.exists(BINARY):
        sys.exit(f"{BINARY} is missing: cargo build --release")
    if not shutil.which("docker-registry"):
        sys.exit("docker-registry is missing: apt-get install docker-registry")
    work = tempfile.mkdtemp(prefix="portcullis-fleet-")
    processes = []
    try:
        registry_address = f"127.0.0.1:{free_port()}"
        with open(os.path.join(work, "registry.yml"), "w") as out:
            out.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/storage\n"
                      f"http:\n  addr: {registry_address}\n")
        processes.append(subprocess.Popen(["docker-registry", "serve", os.path.join(work, "registry.yml")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("the registry", lambda: subprocess.run(["python3", "-c", f"import urllib.request; urllib.request.urlopen('http://{registry_address}/v2/')"],
                                                       capture_output=True).returncode == 0)
        portcullis("bundle", "keygen", os.path.join(work, "release"))
        reference = f"{registry_address}/portcullis/policies:prod"
        base = open(os.path.join(ROOT, "portcullis.toml")).read().replace(
            'routes = "routes.toml"', f'routes = "{ROOT}/routes.toml"').replace(
            'policies = "policies"', f'policies = "{ROOT}/policies"')
        build = os.path.join(work, "build.toml")
        with open(build, "w") as out:
            out.write(base)

        def publish(version):
            path = os.path.join(work, f"bundle-{version}.json")
            portcullis("bundle", "build", "--config", build, "--output", path, "--version", str(version))
            portcullis("bundle", "push", path, reference, "--plain-http")
            portcullis("bundle", "sign", reference, "--key", os.path.join(work, "release.key"), "--plain-http")
            return time.time()

        publish(1)
        admins = []
        for n in range(args.gateways):
            directory = os.path.join(work, f"gateway-{n}")
            os.makedirs(directory)
            shutil.copy(os.path.join(work, "release.pub"), directory)
            admin = f"127.0.0.1:{free_port()}"
            text = base.replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}").replace("127.0.0.1:9901", admin)
            text += (f'\n[bundle]\nreference = "{reference}"\npoll_seconds = {args.poll_seconds}\n'
                     f'public_keys = ["release.pub"]\ncache_dir = "bundles"\nplain_http = true\n')
            config = os.path.join(directory, "portcullis.toml")
            with open(config, "w") as out:
                out.write(text.replace("[server]", f'[server]\nupgrade_socket = "{directory}/upgrade.sock"\npid_file = "{directory}/pid"', 1))
            processes.append(subprocess.Popen([BINARY, "run", "--config", config], env=dict(os.environ, RUST_LOG="error"),
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            admins.append(admin)
        for admin in admins:
            wait_for(f"gateway {admin}", lambda: bundle_version(admin) == 1)
        worst = []
        for round_ in range(args.rounds):
            version = round_ + 2
            published = publish(version)
            arrived = {}
            while len(arrived) < len(admins):
                for admin in admins:
                    if admin not in arrived and bundle_version(admin) == version:
                        arrived[admin] = time.time() - published
                if time.time() - published > 120:
                    sys.exit(f"version {version} did not reach every gateway: {arrived}")
                time.sleep(0.02)
            times = sorted(arrived.values())
            worst.append(times[-1])
            print(f"version {version}: reached {len(times)} gateways after "
                  + ", ".join(f"{t:.2f}" for t in times) + " s")
        print(f"poll every {args.poll_seconds} s: every gateway had the new bundle within "
              f"{max(worst):.2f} s (median of the rounds' last arrival: {sorted(worst)[len(worst) // 2]:.2f} s)")
    finally:
        for process in processes:
            process.terminate()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
