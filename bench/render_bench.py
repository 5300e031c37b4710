#!/usr/bin/env python3
"""Start-up benchmark for `stencil render` against its peers (issue 2, "Speed").

Renders the same 68-line nginx config (15 env variables, one loop) with

  stencil        target/release/stencil render -t bench/fixtures/nginx.conf.j2
  envsubst       /usr/bin/envsubst '$VARS' < bench/fixtures/nginx.conf.envsubst
  minijinja-cli  minijinja-cli --strict --trim-blocks nginx.conf.j2 nginx.data.json
  minijinja-env  minijinja-cli --strict --trim-blocks --env  (template with ENV.)

alternating a-b-c-d-a-b-c-d... in one run, and reports median / p90 wall
time and median peak RSS per tool, and the ratios to envsubst.

Run from anywhere:   python3 bench/render_bench.py [--iterations 300]

Fairness:
  * Every tool writes its output to stdout, redirected to a regular file that
    is truncated before each run (`tool > out.conf`, as in a Dockerfile or an
    entrypoint). stencil with a DEST would stage, fsync and rename: a
    different, safer job than `envsubst > file`, so it is not what is timed.
  * Every tool gets the same environment: the 15 variables from
    fixtures/nginx.data.json (plus APP_UPSTREAM_1..3 for the envsubst version,
    whose loop is unrolled), PATH and HOME. envsubst is given the list of
    variables as SHELL-FORMAT, as the nginx Docker image does; otherwise it
    would blank nginx's own $host, $remote_addr...
  * minijinja-cli renders the same template file byte for byte, its data
    coming from a JSON file {"env": {...}}; the "minijinja-env" row reads the
    environment with --env instead (template text env. -> ENV.).
  * The outputs of all tools are checked to be identical before timing.

Measuring: a tiny C launcher (compiled here with cc, into target/bench-tools)
posix_spawns each run and reports CLOCK_MONOTONIC wall time around
spawn..wait4 and the child's ru_maxrss. It is not done from Python because
Linux charges the parent's RSS high-water mark to a vfork()ed/fork()ed child
at exec: os.wait4 from Python reports >= 10 MiB for /bin/true. The launcher
is static and small; a child's ru_maxrss is max(launcher VmHWM, its own peak),
so any value above the "launcher floor" printed with the results is exact.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "bench" / "fixtures"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
TOOLS = TARGET / "bench-tools"
WORK = TARGET / "bench-tmp"
STENCIL = TARGET / "release" / "stencil"
STENCIL_COPY = WORK / "stencil"
MINIJINJA = TOOLS / "bin" / "minijinja-cli"
ENVSUBST = Path("/usr/bin/envsubst")
LAUNCHER = TOOLS / "spawn-measure"
FLOOR_DIR = TOOLS / "rust-floor"
FLOOR = FLOOR_DIR / "target" / "release" / "rust-floor"

# Reference row: the least a Rust binary with std can do here (read the
# template file, write it to stdout), built with the same release profile
# settings stencil had when this benchmark was written. Not a peer: it shows
# what part of stencil's time is Rust process start-up itself.
FLOOR_TOML = """[package]
name = "rust-floor"
version = "0.1.0"
edition = "2021"

[workspace]

[profile.release]
opt-level = 3
lto = "fat"
codegen-units = 1
panic = "abort"
strip = true
"""
FLOOR_RS = """use std::io::Write;
fn main() {
    let path = std::env::args_os().nth(1).expect("usage: rust-floor FILE");
    let text = std::fs::read(path).expect("read");
    std::io::stdout().lock().write_all(&text).expect("write");
}
"""

LAUNCHER_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
extern char **environ;
/* spawn-measure STDIN STDOUT PROG ARGS...
   prints: wall_ns child_maxrss_kib exit_status self_vmhwm_kib child_cpu_us */
int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: spawn-measure IN OUT PROG ARGS...\n"); return 2; }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, argv[1], O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    struct rusage ru;
    /* The launcher's own peak RSS: what a child inherits as its ru_maxrss
       floor. (getrusage(RUSAGE_SELF) would include the parent's high-water
       mark charged at our exec, so read VmHWM of our own mm.) */
    long self_kib = -1;
    char line[256];
    FILE *st = fopen("/proc/self/status", "r");
    while (st && fgets(line, sizeof line, st))
        if (sscanf(line, "VmHWM: %ld", &self_kib) == 1) break;
    if (st) fclose(st);
    struct timespec t0, t1;
    pid_t pid;
    int status;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int err = posix_spawn(&pid, argv[3], &fa, NULL, argv + 3, environ);
    if (err) { fprintf(stderr, "spawn %s: %s\n", argv[3], strerror(err)); return 2; }
    if (wait4(pid, &status, 0, &ru) < 0) { perror("wait4"); return 2; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    long long cpu_us = (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000LL
                     + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
    printf("%lld %ld %d %ld %lld\n", ns, ru.ru_maxrss, status, self_kib, cpu_us);
    return 0;
}
"""


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build_stencil(skip: bool) -> None:
    if skip:
        log("--no-build: using the existing target/release/stencil")
    else:
        log("cargo build --release")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "stencil"], cwd=ROOT, check=True)
    if not STENCIL.exists():
        sys.exit(f"{STENCIL} missing")
    # Time a private copy: others may rebuild target/release while we run.
    WORK.mkdir(parents=True, exist_ok=True)
    shutil.copy2(STENCIL, STENCIL_COPY)


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (working tree with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ensure_minijinja() -> None:
    if MINIJINJA.exists():
        return
    log(f"installing minijinja-cli into {TOOLS} (one-time)")
    subprocess.run(
        ["cargo", "install", "--locked", "--root", str(TOOLS), "minijinja-cli"],
        check=True,
    )


def ensure_launcher() -> None:
    TOOLS.mkdir(parents=True, exist_ok=True)
    src = TOOLS / "spawn-measure.c"
    if LAUNCHER.exists() and src.exists() and src.read_text() == LAUNCHER_C:
        return
    src.write_text(LAUNCHER_C)
    cc = os.environ.get("CC", "cc")
    for extra in (["-static"], []):  # static keeps the launcher's own RSS (the bias) small
        r = subprocess.run([cc, "-O2", *extra, "-o", str(LAUNCHER), str(src)], capture_output=True, text=True)
        if r.returncode == 0:
            log(f"built launcher with {cc} {' '.join(extra)}")
            return
    sys.exit(f"could not compile {src} with {cc}:\n{r.stderr}")


def ensure_floor() -> None:
    (FLOOR_DIR / "src").mkdir(parents=True, exist_ok=True)
    for path, text in ((FLOOR_DIR / "Cargo.toml", FLOOR_TOML), (FLOOR_DIR / "src" / "main.rs", FLOOR_RS)):
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    env = dict(os.environ, CARGO_TARGET_DIR=str(FLOOR_DIR / "target"))
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", str(FLOOR_DIR / "Cargo.toml")],
                   env=env, check=True)


def setup(floor: bool) -> tuple[dict[str, str], dict[str, dict]]:
    """Returns the child environment and the tools: name -> {argv, stdin}."""
    WORK.mkdir(parents=True, exist_ok=True)
    data = json.loads((FIXTURES / "nginx.data.json").read_text())["env"]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    env.update(data)
    servers = data["APP_UPSTREAM_SERVERS"].split(",")
    for i, s in enumerate(servers, 1):
        env[f"APP_UPSTREAM_{i}"] = s
    envsubst_tmpl = FIXTURES / "nginx.conf.envsubst"
    shell_format = " ".join(f"${{{k}}}" for k in sorted(env) if k.startswith(("NGINX_", "APP_")))

    # The same template reading ENV (minijinja-cli --env) instead of env.
    j2 = FIXTURES / "nginx.conf.j2"
    env_tmpl = WORK / "nginx.conf.ENV.j2"
    env_tmpl.write_text(j2.read_text().replace("env.", "ENV."))

    tools = {
        "stencil": {"argv": [str(STENCIL_COPY), "render", "-t", str(j2)], "stdin": "/dev/null"},
        "envsubst": {"argv": [str(ENVSUBST), shell_format], "stdin": str(envsubst_tmpl)},
        "minijinja-cli": {
            "argv": [str(MINIJINJA), "--strict", "--trim-blocks", str(j2), str(FIXTURES / "nginx.data.json")],
            "stdin": "/dev/null",
        },
        "minijinja-cli --env": {
            "argv": [str(MINIJINJA), "--strict", "--trim-blocks", "--env", str(env_tmpl)],
            "stdin": "/dev/null",
        },
    }
    if floor:
        # Prints the envsubst-rendered output file verbatim: same bytes out.
        tools["(ref) rust floor: cat"] = {"argv": [str(FLOOR), str(WORK / "out.envsubst")], "stdin": "/dev/null"}
    return env, tools


def run_once(tool: dict, env: dict[str, str], out: Path) -> tuple[float, int, int, float]:
    r = subprocess.run(
        [str(LAUNCHER), tool["stdin"], str(out), *tool["argv"]],
        env=env, capture_output=True, text=True, check=True,
    )
    ns, rss, status, self_rss, cpu_us = (int(x) for x in r.stdout.split())
    if status != 0:
        sys.exit(f"{tool['argv'][0]} exited with wait status {status}")
    return ns / 1e6, rss, self_rss, cpu_us / 1e3


def verify(tools: dict[str, dict], env: dict[str, str]) -> int:
    outputs = {}
    for name, tool in tools.items():
        out = WORK / ("out." + re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_"))
        run_once(tool, env, out)
        outputs[name] = out.read_bytes()
    ref = outputs["envsubst"]
    for name, b in outputs.items():
        if b != ref:
            sys.exit(f"output of {name} differs from envsubst's; see {WORK}")
    lines = ref.count(b"\n")
    log(f"outputs identical: {lines} lines, {len(ref)} bytes")
    return len(ref)


def wait_for_quiet(max_load: float, wait_s: int) -> None:
    """Other jobs (compiles) on the same cores turn wall times into queueing
    times and push every ratio towards 1.0: wait for the 1-minute load to drop."""
    waited = 0
    while os.getloadavg()[0] > max_load and waited < wait_s:
        if waited == 0:
            log(f"load {load_avg()} > {max_load}: waiting up to {wait_s}s for a quieter machine")
        time.sleep(10)
        waited += 10
    if os.getloadavg()[0] > max_load:
        log(f"WARNING: still busy (load {load_avg()}); wall-time medians and ratios are not trustworthy, "
            "look at the CPU column and rerun later")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=300, help="timed runs per tool (default 300)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed runs per tool first (default 20)")
    ap.add_argument("--no-build", action="store_true", help="don't run cargo build --release")
    ap.add_argument("--stencil", type=Path, help="time this stencil binary instead (implies --no-build)")
    ap.add_argument("--max-load", type=float, default=1.0,
                    help="wait until the 1-minute load average is at most this (default 1.0)")
    ap.add_argument("--wait", type=int, default=600, help="wait at most this many seconds for it (default 600)")
    ap.add_argument("--no-floor", action="store_true", help="skip the Rust start-up floor reference row")
    ap.add_argument("--json", type=Path, help="also write raw samples here")
    args = ap.parse_args()

    if args.stencil:
        global STENCIL
        STENCIL = args.stencil.resolve()
    build_stencil(args.no_build or args.stencil is not None)
    ensure_minijinja()
    ensure_launcher()
    if not args.no_floor:
        ensure_floor()
    env, tools = setup(not args.no_floor)
    out_bytes = verify(tools, env)

    wait_for_quiet(args.max_load, args.wait)
    load_before = load_avg()
    log(f"load average before: {load_before}; {args.warmup} warm-up + {args.iterations} timed runs per tool, interleaved")
    samples: dict[str, list[tuple[float, int, float]]] = {n: [] for n in tools}
    self_rss = 0
    out = WORK / "out.timed"
    for i in range(args.warmup + args.iterations):
        for name, tool in tools.items():  # a-b-c-d-a-b-c-d...
            ms, rss, srss, cpu = run_once(tool, env, out)
            self_rss = max(self_rss, srss)
            if i >= args.warmup:
                samples[name].append((ms, rss, cpu))
    load_after = load_avg()
    busy = max(float(load_before.split()[0]), float(load_after.split()[0])) > args.max_load

    stats = {}
    for name, s in samples.items():
        wall = [x[0] for x in s]
        rss = [x[1] for x in s]
        cpu = [x[2] for x in s]
        stats[name] = {
            "median_cpu_ms": statistics.median(cpu),
            "median_ms": statistics.median(wall),
            "p90_ms": pct(wall, 0.9),
            "min_ms": min(wall),
            "median_rss_kib": statistics.median(rss),
            "max_rss_kib": max(rss),
        }
    base = stats["envsubst"]

    size = STENCIL_COPY.stat().st_size
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"stencil: {STENCIL.relative_to(ROOT) if STENCIL.is_relative_to(ROOT) else STENCIL}, repo at {git_state()}")
    print(f"load average before / after: {load_before} / {load_after}")
    print(f"runs: {args.iterations} per tool after {args.warmup} warm-up, interleaved; output {out_bytes} bytes")
    print(f"stencil binary: {size / 1024 / 1024:.2f} MiB; launcher floor (its own RSS, "
          f"an upper bound on the RSS bias): {self_rss} KiB")
    print()
    print("| tool | median wall | p90 wall | min wall | median CPU (user+sys) | median peak RSS | max peak RSS "
          "| wall / envsubst | CPU / envsubst | RSS / envsubst |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, st in stats.items():
        print(
            f"| {name} | {st['median_ms']:.2f} ms | {st['p90_ms']:.2f} ms | {st['min_ms']:.2f} ms "
            f"| {st['median_cpu_ms']:.2f} ms | {st['median_rss_kib'] / 1024:.2f} MiB | {st['max_rss_kib'] / 1024:.2f} MiB "
            f"| {st['median_ms'] / base['median_ms']:.2f}x | {st['median_cpu_ms'] / base['median_cpu_ms']:.2f}x "
            f"| {st['median_rss_kib'] / base['median_rss_kib']:.2f}x |"
        )
    s = stats["stencil"]
    ok_wall = s["median_ms"] <= 1.2 * base["median_ms"]
    ok_rss = s["median_rss_kib"] <= 4 * 1024
    if busy:
        print()
        print(f"WARNING: load average above {args.max_load} during the run: wall times include waiting for a CPU.")
    print()
    print(f"target stencil median wall <= 1.2x envsubst: {s['median_ms'] / base['median_ms']:.2f}x "
          f"{'MET' if ok_wall else 'MISSED'}")
    print(f"target stencil peak RSS <= 4 MiB: {s['median_rss_kib'] / 1024:.2f} MiB {'MET' if ok_rss else 'MISSED'}")

    if args.json:
        args.json.write_text(json.dumps({"stats": stats, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
