#!/usr/bin/env python3
"""A fleet of `stencil watch` instances on one etcd and one Consul (issue 15).

    python3 bench/fleet_bench.py --stencil /work/target-release/release/stencil
                                 [--instances 100] [--puts 200] [--templates 10]
                                 [--keys 5] [--gap-ms 50] [--backends etcd,consul]

Each of --instances instances renders the same --templates templates (each
reads --keys keys of its own, `key('fleet/tJ/kK')`) into its own directory,
as a fleet of sidecars would. For each of --puts puts of one key (the first
key of the first template, read by every instance): the time from the put
being sent until all the instances' files hold the new value (inotify on
every output directory, then a read), p50/p90/p99/max.

Also: the server's CPU time over the put phase (etcd: utime+stime of its
process), connections to the server (established TCP sockets of each
instance to the server port), etcd's own count of watch streams and
watchers (its /metrics), and the instances' total RSS and PSS (PSS shares
the binary's pages among the instances that map them: the honest total).

Starts its own etcd 3.5 (`--unsafe-no-fsync`) and the Consul KV test server
(tests/support/consul/, through the test executable; build it first with
`cargo test --release --test main --no-run --target-dir DIR` and give it
with --consul-test-binary, or it is looked for in the target directories).
Prints Markdown for BENCHMARKS.md. Needs `ulimit -n` above 4 x instances.
"""

import argparse
import ctypes
import glob
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import watch_bench as wb  # noqa: E402  (servers, /proc helpers, percentiles)
import lead_table  # noqa: E402

IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80


class FleetWaiter:
    """Waits until every file of a set holds given content: one inotify
    instance watching every output directory."""

    def __init__(self, paths):
        self.paths = paths
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError("inotify_init1 failed")
        for d in sorted({os.path.dirname(p) for p in paths}):
            if self.libc.inotify_add_watch(self.fd, d.encode(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
                raise OSError(f"inotify_add_watch {d} failed (fs.inotify.max_user_watches?)")

    def wait_all(self, content, timeout=30.0):
        deadline = time.perf_counter() + timeout
        left = set(self.paths)
        while True:
            for p in list(left):
                try:
                    with open(p, "rb") as f:
                        if f.read() == content:
                            left.discard(p)
                except FileNotFoundError:
                    pass
            if not left:
                return time.perf_counter()
            rest = deadline - time.perf_counter()
            if rest <= 0:
                raise TimeoutError(f"{len(left)} files never got {content!r}, e.g. {sorted(left)[0]}")
            if select.select([self.fd], [], [], rest)[0]:
                try:
                    while os.read(self.fd, 1 << 16):
                        pass
                except BlockingIOError:
                    pass

    def close(self):
        os.close(self.fd)


def template_body(t, keys):
    return "".join(f'k{k}={{{{ key("fleet/t{t}/k{k}") }}}}\n' for k in range(keys))


def expected(t, keys, changed=None):
    return "".join(f"k{k}={changed if (k == 0 and changed) else f'v{t}.{k}'}\n"
                   for k in range(keys)).encode()


def start_fleet(backend, args, work):
    procs = []
    for i in range(args.instances):
        d = os.path.join(work, f"i{i:03d}")
        for sub in ("cfg", "tpl", "out"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        cfg = ["[sources.kv]", backend.source_toml()]
        if backend.kind == "consul" and args.consul_max_queries:
            cfg.append(f"max_watch_queries = {args.consul_max_queries}")
        for t in range(args.templates):
            src = os.path.join(d, "tpl", f"t{t}.j2")
            with open(src, "w") as f:
                f.write(template_body(t, args.keys))
            cfg += ["[[templates]]", f'source = "{src}"',
                    f'destination = "{os.path.join(d, "out", f"t{t}.conf")}"', ""]
        path = os.path.join(d, "cfg", "stencil.toml")
        with open(path, "w") as f:
            f.write("\n".join(cfg))
        log = open(os.path.join(d, "stencil.log"), "w")
        procs.append((subprocess.Popen([args.stencil, "--log-level", "warn", "watch", "-c", path],
                                       stdout=subprocess.DEVNULL, stderr=log), log))
    return procs


def rss_totals(pids):
    rss = pss = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def etcd_watch_metrics(url):
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out = {}
    for name in ("etcd_debugging_mvcc_watch_stream_total", "etcd_debugging_mvcc_watcher_total"):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        out[name] = int(float(m.group(1))) if m else None
    return out


def server_connections(port):
    """Established TCP connections whose local port is the server's."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def run_backend(backend, args):
    for t in range(args.templates):
        for k in range(args.keys):
            backend.put(f"fleet/t{t}/k{k}", f"v{t}.{k}")
    work = tempfile.mkdtemp(prefix="stencil-fleet-")
    procs = []
    try:
        t_start = time.perf_counter()
        procs = start_fleet(backend, args, work)
        all_files = [os.path.join(work, f"i{i:03d}", "out", f"t{t}.conf")
                     for i in range(args.instances) for t in range(args.templates)]
        startup_waiter = FleetWaiter(all_files)
        deadline = time.perf_counter() + 300
        for t in range(args.templates):
            files = [p for p in all_files if p.endswith(f"/t{t}.conf")]
            w = FleetWaiter(files)
            w.wait_all(expected(t, args.keys), timeout=max(1, deadline - time.perf_counter()))
            w.close()
        startup = time.perf_counter() - t_start
        startup_waiter.close()
        time.sleep(2.0)
        pids = [p.pid for p, _ in procs]
        conns = sorted(wb.established_to(pid, backend.port) for pid in pids)
        metrics_before = etcd_watch_metrics(backend.url) if backend.kind == "etcd" else {}
        # The Consul test server's own process when its test executable runs
        # directly (not through cargo, whose process is not the server).
        direct = backend.kind == "etcd" or wb.Consul.executable
        server_pid = backend.proc.pid if direct else None
        cpu0 = wb.proc_cpu_ticks(server_pid) if server_pid else 0
        fleet_cpu0 = sum(wb.proc_cpu_ticks(pid) for pid in pids)
        targets = [os.path.join(work, f"i{i:03d}", "out", "t0.conf") for i in range(args.instances)]
        waiter = FleetWaiter(targets)
        lat = []
        t_phase = time.perf_counter()
        for n in range(1, args.puts + 1):
            value = f"p{n}"
            t0 = time.perf_counter()
            backend.put("fleet/t0/k0", value)
            t1 = waiter.wait_all(expected(0, args.keys, value))
            lat.append(t1 - t0)
            time.sleep(args.gap_ms / 1000)
        phase = time.perf_counter() - t_phase
        cpu = (wb.proc_cpu_ticks(server_pid) - cpu0) / wb.CLK_TCK if server_pid else float("nan")
        fleet_cpu = (sum(wb.proc_cpu_ticks(pid) for pid in pids) - fleet_cpu0) / wb.CLK_TCK
        waiter.close()
        rss, pss = rss_totals(pids)
        dead = [i for i, (p, _) in enumerate(procs) if p.poll() is not None]
        lat.sort()
        return {
            "startup": startup, "n": len(lat), "p50": wb.pct(lat, 50), "p90": wb.pct(lat, 90),
            "p99": wb.pct(lat, 99), "max": lat[-1], "conns": conns,
            "server_conns": server_connections(backend.port), "metrics": metrics_before,
            "cpu": cpu, "fleet_cpu": fleet_cpu, "phase": phase, "rss": rss, "pss": pss, "dead": dead,
        }
    finally:
        for p, log in procs:
            p.terminate()
        for p, log in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()
        shutil.rmtree(work, ignore_errors=True)


def find_consul_test_binary():
    found = []
    for d in ("/work/target-release", os.path.join(wb.ROOT, "target")):
        found += [f for f in glob.glob(os.path.join(d, "release/deps/main-*"))
                  if os.access(f, os.X_OK) and not f.endswith(".d")]
    return max(found, key=os.path.getmtime) if found else None


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stencil", default="/work/target-release/release/stencil")
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--puts", type=int, default=200)
    ap.add_argument("--templates", type=int, default=10)
    ap.add_argument("--keys", type=int, default=5)
    ap.add_argument("--gap-ms", type=float, default=50)
    ap.add_argument("--backends", default="etcd,consul")
    ap.add_argument("--consul-test-binary")
    ap.add_argument("--consul-max-queries", type=int, default=1,
                    help="max_watch_queries of the Consul source: 1 merges every watched key "
                         "into one blocking query (one connection) per instance; 0 keeps "
                         "stencil's default (64), one query per folder of keys")
    ap.add_argument("--update-benchmarks", action="store_true",
                    help="write this run's rows of the table BENCHMARKS.md leads with")
    args = ap.parse_args()
    # A private copy: a rebuild during the run would mix two versions.
    copy_dir = tempfile.mkdtemp(prefix="stencil-fleet-bin-")
    shutil.copy2(args.stencil, os.path.join(copy_dir, "stencil"))
    args.stencil = os.path.join(copy_dir, "stencil")
    wb.Consul.executable = args.consul_test_binary or find_consul_test_binary()
    m = wb.machine()
    out = [f"Machine: {m['nproc']} cores ({m['cpu']}), {m['mem']} RAM, {m['fs']} temp dir; "
           f"{m['date']}; stencil {m['commit']}; load at start: `{m['uptime']}`", "",
           f"{args.instances} instances × {args.templates} templates × {args.keys} keys; "
           f"{args.puts} puts of one key every instance reads, {args.gap_ms:g} ms apart", "",
           "| server | put -> all files, p50 | p90 | p99 | max | start-up (all files) | "
           "connections per instance | server connections | watch streams / watchers (etcd) | "
           "server CPU over the puts | instance CPU per put (mean, 10 ms ticks) | total RSS / PSS |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lead = []
    try:
        for b in args.backends.split(","):
            wb.log(f"fleet on {b}")
            srv = wb.Etcd() if b == "etcd" else wb.Consul()
            try:
                r = run_backend(srv, args)
            finally:
                srv.close()
            wb.log(f"  {r}")
            met = r["metrics"]
            streams = (f"{met.get('etcd_debugging_mvcc_watch_stream_total')} / "
                       f"{met.get('etcd_debugging_mvcc_watcher_total')}") if met else "–"
            cpu = (f"{r['cpu'] * 1000:.0f} ms in {r['phase']:.1f} s "
                   f"({100 * r['cpu'] / r['phase']:.1f}% of a core)") if r["cpu"] == r["cpu"] else "–"
            out.append(
                f"| {srv.version} | {wb.ms(r['p50'])} ms | {wb.ms(r['p90'])} ms | {wb.ms(r['p99'])} ms | "
                f"{wb.ms(r['max'])} ms | {r['startup']:.1f} s | {wb.span(r['conns'])} | "
                f"{r['server_conns']} | {streams} | {cpu} | "
                f"{r['fleet_cpu'] * 1000 / r['n'] / args.instances:.2f} ms | "
                f"{r['rss'] / 1024:.0f} / {r['pss'] / 1024:.0f} MiB |")
            lead.append(lead_table.row(
                f"fleet: {args.instances} `stencil watch` on one {b} server, put -> all "
                f"{args.instances} files hold the value ({r['n']} puts; files on {m['fs']}): p50 / p99",
                f"{wb.ms(r['p50'])} / {wb.ms(r['p99'])} ms"
                + (f"; {len(r['dead'])} instances exited" if r["dead"] else ""),
                f"{srv.version}; {r['server_conns']} server connections; instances' PSS "
                f"{r['pss'] / 1024:.0f} MiB in all", "p99 ≤ 100 ms",
                r["p99"] <= 0.1 and not r["dead"]))
            if r["dead"]:
                out.append(f"\n**{len(r['dead'])} instances exited during the run**\n")
    finally:
        shutil.rmtree(copy_dir, ignore_errors=True)
    out.append("")
    out.append(f"Load at the end: `{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}`")
    print("\n".join(out))
    if args.update_benchmarks and lead:
        lead_table.update(lead)


if __name__ == "__main__":
    main()
