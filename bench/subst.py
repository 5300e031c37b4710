#!/usr/bin/env python3
"""`stencil subst` against GNU envsubst (issue 7, "Speed").

Two inputs, each given to both tools with the same environment and the
same SHELL-FORMAT (the 15 variables, as the nginx Docker image calls
envsubst, so nginx's own $host and $remote_addr survive):

  small   a 68-line nginx config with 15 variables (~2 KiB)
  10mb    that config repeated to 10 MiB

Runs alternate envsubst / stencil (the first of each pair swaps every
iteration) in one process, so both see the same machine noise. Each run is
`tool 'FORMAT' < input > out` with regular files, started with posix_spawn;
wall time is measured around spawn..wait4, CPU time is the child's user+sys
from wait4. The outputs are checked to be byte-identical before timing.

Run from the repository root or anywhere:

  python3 bench/subst.py [--iterations 300] [--big-iterations 30] [--no-build]
                         [--also static=target/x86_64-unknown-linux-gnu/release/stencil]

Targets (issue 7): stencil at most 1.0x envsubst on small, 0.5x on 10mb.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARS = {
    "NGINX_WORKER_PROCESSES": "auto",
    "NGINX_WORKER_CONNECTIONS": "4096",
    "NGINX_LOG_DIR": "/var/log/nginx",
    "NGINX_KEEPALIVE_TIMEOUT": "65",
    "NGINX_CLIENT_MAX_BODY_SIZE": "16m",
    "NGINX_GZIP_LEVEL": "5",
    "APP_UPSTREAM_NAME": "app",
    "APP_UPSTREAM_1": "10.0.0.11:8080",
    "APP_UPSTREAM_2": "10.0.0.12:8080",
    "APP_UPSTREAM_3": "10.0.0.13:8080",
    "NGINX_HTTP_PORT": "80",
    "NGINX_HTTPS_PORT": "443",
    "NGINX_SERVER_NAME": "www.example.org",
    "NGINX_SSL_CERT": "/etc/ssl/certs/example.pem",
    "NGINX_SSL_KEY": "/etc/ssl/private/example.key",
}

# 68 lines; ${VAR} for deployment settings, nginx's own $variables left alone.
TEMPLATE = """\
user nginx;
worker_processes ${NGINX_WORKER_PROCESSES};
pid /run/nginx.pid;

events {
    worker_connections ${NGINX_WORKER_CONNECTIONS};
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;

    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    access_log ${NGINX_LOG_DIR}/access.log main;
    error_log ${NGINX_LOG_DIR}/error.log warn;

    sendfile on;
    tcp_nopush on;
    keepalive_timeout ${NGINX_KEEPALIVE_TIMEOUT};
    client_max_body_size ${NGINX_CLIENT_MAX_BODY_SIZE};

    gzip on;
    gzip_comp_level ${NGINX_GZIP_LEVEL};
    gzip_types text/plain text/css application/json application/javascript;

    upstream ${APP_UPSTREAM_NAME} {
        server ${APP_UPSTREAM_1} max_fails=3 fail_timeout=10s;
        server ${APP_UPSTREAM_2} max_fails=3 fail_timeout=10s;
        server ${APP_UPSTREAM_3} max_fails=3 fail_timeout=10s;
        keepalive 32;
    }

    server {
        listen ${NGINX_HTTP_PORT};
        server_name ${NGINX_SERVER_NAME};
        return 301 https://$host$request_uri;
    }

    server {
        listen ${NGINX_HTTPS_PORT} ssl http2;
        server_name ${NGINX_SERVER_NAME};

        ssl_certificate ${NGINX_SSL_CERT};
        ssl_certificate_key ${NGINX_SSL_KEY};

        location / {
            proxy_pass http://${APP_UPSTREAM_NAME};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }

        location /static/ {
            root /srv/www;
            expires 30d;
        }

        location = /healthz {
            access_log off;
            return 200 "ok";
        }
    }
}
"""

FORMAT = " ".join("$" + name for name in VARS)


def run_once(argv: list[str], env: dict[str, str], stdin: str, stdout: str) -> tuple[float, float]:
    """Wall and CPU seconds of one `argv < stdin > stdout`."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, stdin, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime


def bench(name: str, tools: dict[str, list[str]], env, infile: str, workdir: str, iterations: int):
    outs = {t: os.path.join(workdir, f"{name}.{t}.out") for t in tools}
    for tool, argv in tools.items():
        run_once(argv, env, infile, outs[tool])
    first, *rest = tools
    for tool in rest:
        with open(outs[first], "rb") as a, open(outs[tool], "rb") as b:
            if a.read() != b.read():
                sys.exit(f"{name}: {tool} output differs from {first}")
    walls = {t: [] for t in tools}
    cpus = {t: [] for t in tools}
    order = list(tools)
    for i in range(iterations):
        for tool in order if i % 2 == 0 else reversed(order):
            wall, cpu = run_once(tools[tool], env, infile, outs[tool])
            walls[tool].append(wall)
            cpus[tool].append(cpu)
    return walls, cpus


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


def report(name: str, size: int, walls, cpus, base: str) -> list[str]:
    lines = [
        f"### {name} ({size:,} bytes, {len(walls[base])} runs each, alternating)",
        "",
        "| tool | median wall ms | p10 | p90 | mean CPU ms | wall vs envsubst |",
        "|---|---|---|---|---|---|",
    ]
    base_median = statistics.median(walls[base])
    for tool in walls:
        w = sorted(walls[tool])
        med = statistics.median(w)
        p10 = w[len(w) // 10]
        p90 = w[(len(w) * 9) // 10]
        lines.append(
            f"| {tool} | {ms(med)} | {ms(p10)} | {ms(p90)} | {ms(statistics.mean(cpus[tool]))} "
            f"| {med / base_median:.2f}x |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--big-iterations", type=int, default=30)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="another stencil binary to time in the same run, e.g. a static build",
    )
    args = parser.parse_args()

    envsubst = shutil.which("envsubst") or sys.exit("envsubst not found: apt-get install gettext-base")
    if not args.no_build:
        subprocess.run([os.path.join(ROOT, "scripts", "build-release"), "--quiet"], cwd=ROOT, check=True)
    stencil = os.path.join(ROOT, "target", "release", "stencil")

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root", **VARS}
    tools = {
        "envsubst": [envsubst, FORMAT],
        "stencil subst": [stencil, "subst", FORMAT],
    }
    for also in args.also:
        label, path = also.split("=", 1)
        tools[f"stencil subst ({label})"] = [os.path.abspath(path), "subst", FORMAT]
    assert TEMPLATE.count("\n") == 68, TEMPLATE.count("\n")

    out = []
    with tempfile.TemporaryDirectory() as work:
        small = os.path.join(work, "nginx.conf.tmpl")
        with open(small, "w") as f:
            f.write(TEMPLATE)
        big = os.path.join(work, "big.tmpl")
        with open(big, "w") as f:
            reps = (10 << 20) // len(TEMPLATE) + 1
            f.write((TEMPLATE * reps)[: 10 << 20])
        for name, path, n in [("small", small, args.iterations), ("10mb", big, args.big_iterations)]:
            walls, cpus = bench(name, tools, env, path, work, n)
            out += report(name, os.path.getsize(path), walls, cpus, "envsubst") + [""]

    cpu = ""
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    except OSError:
        pass
    print(f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"Machine: {platform.machine()}, nproc {os.cpu_count()}, {platform.platform()}")
    print("envsubst: " + subprocess.run([envsubst, "--version"], capture_output=True, text=True).stdout.splitlines()[0])
    print()
    print("\n".join(out))
    print("lscpu | head:")
    print("\n".join("    " + line for line in cpu))


if __name__ == "__main__":
    main()
