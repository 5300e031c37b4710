#!/usr/bin/env python3
"""One-shot renders: `stencil render` against its peers (issue 15 items 1, 2).

Two workloads, each rendered by every tool alternating a-b-c-d-a-b-c-d...
in one run, with median / p90 wall time, CPU and median peak RSS per tool
and the ratios to GNU envsubst:

  nginx   bench/fixtures/nginx.conf.j2: 68 lines, 15 env variables, one loop
  refs    generated: 5,000 lines, each referencing one of 1,000 env
          variables (every variable five times)

  stencil render  stencil render -t TEMPLATE.j2
  stencil subst   stencil subst ['$VARS'] < TEMPLATE.envsubst
  envsubst        /usr/bin/envsubst ['$VARS'] < TEMPLATE.envsubst
  minijinja-cli   minijinja-cli --strict --trim-blocks TEMPLATE.j2 DATA.json
  minijinja-env   minijinja-cli --strict --trim-blocks --env  (template with ENV.)

Run from anywhere:

  python3 bench/render_bench.py [--target-dir DIR] [--iterations 300]
                                [--workloads nginx,refs] [--update-benchmarks]

The release build is `scripts/build-release --target-dir DIR`, as shipped (DIR:
--target-dir, else $CARGO_TARGET_DIR, else target/); --stencil PATH times
a binary built elsewhere instead. minijinja-cli is installed with `cargo
install` into DIR/bench-tools on first use. --update-benchmarks rewrites
this benchmark's rows of the table BENCHMARKS.md leads with
(bench/lead_table.py).

Fairness:
  * Every tool writes its output to stdout, redirected to a regular file that
    is truncated before each run (`tool > out.conf`, as in a Dockerfile or an
    entrypoint). stencil with a DEST would stage, fsync and rename: a
    different, safer job than `envsubst > file`, so it is not what is timed.
  * Every tool gets the same environment: the workload's variables (for
    nginx, those of fixtures/nginx.data.json plus APP_UPSTREAM_1..3 for the
    envsubst version, whose loop is unrolled), PATH and HOME. For nginx,
    envsubst is given the list of variables as SHELL-FORMAT, as the nginx
    Docker image does (otherwise it would blank nginx's own $host ...); the
    refs template has no other `$`, so envsubst replaces every variable.
  * minijinja-cli renders the same template file byte for byte, its data
    coming from a JSON file {"env": {...}}; the "minijinja-cli --env" row
    reads the environment instead (template text env. -> ENV.).
  * The outputs of all tools are checked to be identical before timing.

Measuring: a tiny C launcher (compiled here with cc, into DIR/bench-tools)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lead_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "bench" / "fixtures"
ENVSUBST = Path("/usr/bin/envsubst")
SKIP_MINIJINJA = False  # --skip-minijinja
# Set by set_target_dir() from --target-dir.
TARGET = TOOLS = WORK = STENCIL = STENCIL_COPY = MINIJINJA = LAUNCHER = FLOOR_DIR = FLOOR = Path()


def set_target_dir(target: Path) -> None:
    global TARGET, TOOLS, WORK, STENCIL, STENCIL_COPY, MINIJINJA, LAUNCHER, FLOOR_DIR, FLOOR
    TARGET = target.resolve()
    TOOLS = TARGET / "bench-tools"
    WORK = TARGET / "bench-tmp"
    STENCIL = TARGET / "release" / "stencil"
    STENCIL_COPY = WORK / "stencil"
    MINIJINJA = TOOLS / "bin" / "minijinja-cli"
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
        log(f"--no-build: using the existing {STENCIL}")
    else:
        log(f"scripts/build-release --target-dir {TARGET}")
        subprocess.run([str(ROOT / "scripts" / "build-release"), "--quiet",
                        "--target-dir", str(TARGET)], cwd=ROOT, check=True)
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


def nginx_env() -> dict[str, str]:
    """The nginx workload's environment: the fixture's variables plus
    APP_UPSTREAM_1..3 for the envsubst version, whose loop is unrolled."""
    data = json.loads((FIXTURES / "nginx.data.json").read_text())["env"]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    env.update(data)
    servers = data["APP_UPSTREAM_SERVERS"].split(",")
    for i, s in enumerate(servers, 1):
        env[f"APP_UPSTREAM_{i}"] = s
    return env


def nginx_shell_format(env: dict[str, str]) -> str:
    """envsubst's SHELL-FORMAT for the nginx workload, as the nginx image
    passes it (only the template's own variables, not nginx's $host)."""
    return " ".join(f"${{{k}}}" for k in sorted(env) if k.startswith(("NGINX_", "APP_")))


def nginx_workload(floor: bool) -> tuple[dict[str, str], dict[str, dict]]:
    """The 68-line nginx config: the child environment and the tools."""
    env = nginx_env()
    shell_format = nginx_shell_format(env)
    tools = peers(FIXTURES / "nginx.conf.j2", FIXTURES / "nginx.conf.envsubst", FIXTURES / "nginx.data.json",
                  [shell_format])
    if floor:
        # Prints the envsubst-rendered output file verbatim: same bytes out.
        tools["(ref) rust floor: cat"] = {"argv": [str(FLOOR), str(WORK / "out.nginx.envsubst")],
                                          "stdin": "/dev/null"}
    return env, tools


def refs_workload() -> tuple[dict[str, str], dict[str, dict]]:
    """5,000 lines, each referencing one of 1,000 variables (each five times)."""
    names = [f"REF_VAR_{i:04d}" for i in range(1000)]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    env.update({n: f"value-{i}-{'x' * (i % 17)}" for i, n in enumerate(names)})
    picks = [names[(i * 7) % 1000] for i in range(5000)]
    j2 = WORK / "refs.j2"
    j2.write_text("".join(f"line {i} {n}={{{{ env.{n} }}}}\n" for i, n in enumerate(picks)))
    plain = WORK / "refs.envsubst"
    plain.write_text("".join(f"line {i} {n}=${{{n}}}\n" for i, n in enumerate(picks)))
    data = WORK / "refs.data.json"
    data.write_text(json.dumps({"env": {n: env[n] for n in names}}))
    return env, peers(j2, plain, data, [])


def peers(j2: Path, plain: Path, data: Path, shell_format: list[str]) -> dict[str, dict]:
    """Every tool rendering one workload: name -> {argv, stdin}."""
    # The same template reading ENV (minijinja-cli --env) instead of env.
    env_tmpl = WORK / (j2.stem + ".ENV.j2")
    env_tmpl.write_text(j2.read_text().replace("env.", "ENV."))
    tools = {
        "stencil render": {"argv": [str(STENCIL_COPY), "render", "-t", str(j2)], "stdin": "/dev/null"},
        "stencil subst": {"argv": [str(STENCIL_COPY), "subst", *shell_format], "stdin": str(plain)},
        "envsubst": {"argv": [str(ENVSUBST), *shell_format], "stdin": str(plain)},
    }
    if SKIP_MINIJINJA:
        return tools
    return tools | {
        "minijinja-cli": {
            "argv": [str(MINIJINJA), "--strict", "--trim-blocks", str(j2), str(data)],
            "stdin": "/dev/null",
        },
        "minijinja-cli --env": {
            "argv": [str(MINIJINJA), "--strict", "--trim-blocks", "--env", str(env_tmpl)],
            "stdin": "/dev/null",
        },
    }


def run_once(tool: dict, env: dict[str, str], out: Path) -> tuple[float, int, int, float]:
    r = subprocess.run(
        [str(LAUNCHER), tool["stdin"], str(out), *tool["argv"]],
        env=env, capture_output=True, text=True, check=True,
    )
    ns, rss, status, self_rss, cpu_us = (int(x) for x in r.stdout.split())
    if status != 0:
        sys.exit(f"{tool['argv'][0]} exited with wait status {status}")
    return ns / 1e6, rss, self_rss, cpu_us / 1e3


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


def verify(workload: str, tools: dict[str, dict], env: dict[str, str]) -> int:
    outputs = {}
    for name, tool in tools.items():
        out = WORK / (f"out.{workload}." + re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_"))
        run_once(tool, env, out)
        outputs[name] = out.read_bytes()
    ref = outputs["envsubst"]
    for name, b in outputs.items():
        if b != ref:
            sys.exit(f"{workload}: output of {name} differs from envsubst's; see {WORK}")
    lines = ref.count(b"\n")
    log(f"{workload}: outputs identical: {lines} lines, {len(ref)} bytes")
    return len(ref)


def measure(tools: dict[str, dict], env: dict[str, str], warmup: int, iterations: int) -> dict[str, dict]:
    """Runs the tools interleaved; returns name -> statistics."""
    samples: dict[str, list[tuple[float, int, float]]] = {n: [] for n in tools}
    out = WORK / "out.timed"
    for i in range(warmup + iterations):
        for name, tool in tools.items():  # a-b-c-d-a-b-c-d...
            ms, rss, srss, cpu = run_once(tool, env, out)
            measure.self_rss = max(measure.self_rss, srss)
            if i >= warmup:
                samples[name].append((ms, rss, cpu))
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
    return stats


measure.self_rss = 0


def print_table(workload: str, stats: dict[str, dict]) -> None:
    base = stats["envsubst"]
    print(f"### {workload}")
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
    print()


# Per workload: the target on stencil render's median wall (x envsubst),
# and on its peak RSS (MiB) where the issue sets one.
TARGETS = {"nginx": (1.2, 4.0), "refs": (0.5, None)}
TITLES = {
    "nginx": "68-line nginx, 15 env vars",
    "refs": "5,000 references to 1,000 env vars",
}


def lead_rows(workload: str, stats: dict[str, dict], size: int) -> list[list[str]]:
    """This workload's rows of BENCHMARKS.md's lead table."""
    base = stats["envsubst"]
    s = stats["stencil render"]
    wall_target, rss_target = TARGETS[workload]

    def ratio(name: str) -> str:
        if name not in stats:
            return "not run"
        return f"{stats[name]['median_ms'] / base['median_ms']:.2f}x"

    peers_wall = (f"envsubst 1.00x ({base['median_ms']:.2f} ms), minijinja-cli {ratio('minijinja-cli')}, "
                  f"minijinja-cli --env {ratio('minijinja-cli --env')}, stencil subst {ratio('stencil subst')}")
    rows = [lead_table.row(
        f"{TITLES[workload]}: stencil render wall / envsubst (median)",
        f"{ratio('stencil render')} ({s['median_ms']:.2f} ms; CPU {s['median_cpu_ms'] / base['median_cpu_ms']:.2f}x)",
        peers_wall, f"≤ {wall_target}x", s["median_ms"] <= wall_target * base["median_ms"])]
    if rss_target is not None:
        def mib(name: str) -> str:
            if name not in stats:
                return "not run"
            return f"{stats[name]['median_rss_kib'] / 1024:.2f} MiB"
        rows.append(lead_table.row(
            f"{TITLES[workload]}: peak RSS",
            mib("stencil render"),
            f"envsubst {mib('envsubst')}, minijinja-cli {mib('minijinja-cli')}, stencil subst {mib('stencil subst')}",
            f"≤ {rss_target} MiB", s["median_rss_kib"] <= rss_target * 1024))
    if workload == "nginx":
        rows.append(lead_table.row("release binary size (stripped)", f"{size / 1024 / 1024:.2f} MiB",
                                   "–", "reported", None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=300, help="timed runs per tool (default 300)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed runs per tool first (default 20)")
    ap.add_argument("--workloads", default="nginx,refs", help="comma-separated: nginx, refs (default both)")
    ap.add_argument("--target-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")),
                    help="cargo target directory of the release build, and where the tools go "
                         "(default $CARGO_TARGET_DIR, else target/)")
    ap.add_argument("--no-build", action="store_true", help="don't run cargo build --release")
    ap.add_argument("--stencil", type=Path, help="time this stencil binary instead (implies --no-build)")
    ap.add_argument("--max-load", type=float, default=1.0,
                    help="wait until the 1-minute load average is at most this (default 1.0)")
    ap.add_argument("--wait", type=int, default=600, help="wait at most this many seconds for it (default 600)")
    ap.add_argument("--no-floor", action="store_true", help="skip the Rust start-up floor reference row")
    ap.add_argument("--skip-minijinja", action="store_true",
                    help="leave minijinja-cli out (when it cannot be installed; the lead table says 'not run')")
    ap.add_argument("--update-benchmarks", action="store_true",
                    help="rewrite this benchmark's rows of BENCHMARKS.md's lead table")
    ap.add_argument("--json", type=Path, help="also write the statistics here")
    args = ap.parse_args()

    set_target_dir(args.target_dir)
    if args.stencil:
        global STENCIL
        STENCIL = args.stencil.resolve()
    build_stencil(args.no_build or args.stencil is not None)
    global SKIP_MINIJINJA
    SKIP_MINIJINJA = args.skip_minijinja
    if not SKIP_MINIJINJA:
        ensure_minijinja()
    ensure_launcher()
    if not args.no_floor:
        ensure_floor()
    workloads = {}
    for w in args.workloads.split(","):
        if w == "nginx":
            workloads[w] = nginx_workload(not args.no_floor)
        elif w == "refs":
            workloads[w] = refs_workload()
        else:
            sys.exit(f"unknown workload {w!r} (nginx, refs)")
    out_bytes = {w: verify(w, tools, env) for w, (env, tools) in workloads.items()}

    wait_for_quiet(args.max_load, args.wait)
    load_before = load_avg()
    log(f"load average before: {load_before}; {args.warmup} warm-up + {args.iterations} timed runs per tool, interleaved")
    results = {w: measure(tools, env, args.warmup, args.iterations) for w, (env, tools) in workloads.items()}
    load_after = load_avg()
    busy = max(float(load_before.split()[0]), float(load_after.split()[0])) > args.max_load

    size = STENCIL_COPY.stat().st_size
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"stencil: {STENCIL}, repo at {git_state()}")
    print(f"load average before / after: {load_before} / {load_after}")
    print(f"runs: {args.iterations} per tool after {args.warmup} warm-up, interleaved; output bytes {out_bytes}")
    print(f"stencil binary: {size / 1024 / 1024:.2f} MiB; launcher floor (its own RSS, "
          f"an upper bound on the RSS bias): {measure.self_rss} KiB")
    print()
    for w, stats in results.items():
        print_table(w, stats)
    if busy:
        print(f"WARNING: load average above {args.max_load} during the run: wall times include waiting for a CPU.")
        print()
    rows = []
    for w, stats in results.items():
        for r in lead_rows(w, stats, size):
            rows.append(r)
            print(f"{r[0]}: {r[1]} (target {r[3]}: {r[4]})")
    if args.update_benchmarks:
        lead_table.update(rows)
        log("BENCHMARKS.md lead table updated")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
