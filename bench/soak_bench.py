#!/usr/bin/env python3
"""`stencil watch` memory over many writes (issue 11, item 8).

    python3 bench/soak_bench.py [--writes 20000] [--at 1000,5000,10000,20000]
                                [--stencil target/release/stencil]

One template reading one etcd key, no debounce, reload command `true`
(--reload);
for each of --writes changes: put a new value, wait until the destination
holds it. After the counts in --at (and once more after 10 s idle at the
end): stencil's RSS (VmRSS) and peak (VmHWM). Target: growth from 1,000 to
20,000 writes under 1 MiB. Starts its own etcd on 127.0.0.1, as
bench/watch_bench.py does; prints Markdown for BENCHMARKS.md.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import watch_bench as wb  # noqa: E402


class SoakStencil(wb.Stencil):
    """watch_bench's Stencil with a reload command on the template."""

    def __init__(self, backend, body, workdir, reload, wrap=()):
        self.workdir = workdir
        for d in ("cfg", "tpl", "out", "log"):
            os.makedirs(os.path.join(workdir, d), exist_ok=True)
        src = os.path.join(workdir, "tpl", "soak.j2")
        with open(src, "w") as f:
            f.write(body)
        cfg = ["[sources.kv]", backend.source_toml(), "[[templates]]",
               f'source = "{src}"', f'destination = "{self.dest("soak")}"']
        if reload:
            cfg.append(f"reload = {reload!r}")
        self.config = os.path.join(workdir, "cfg", "stencil.toml")
        with open(self.config, "w") as f:
            f.write("\n".join(cfg) + "\n")
        self.port = wb.free_port()
        self.stderr_path = os.path.join(workdir, "log", "stencil.log")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [*wrap, wb.STENCIL, "watch", "-c", self.config, "--listen",
             f"127.0.0.1:{self.port}"], stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.pid = self.proc.pid


def rss_kib(pid, field="VmRSS"):
    return wb.kib(wb.proc_status(pid, field))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=20000)
    ap.add_argument("--at", default="1000,5000,10000,20000")
    ap.add_argument("--stencil", default=wb.STENCIL)
    ap.add_argument("--reload", default="true", help="the template's reload command ('' for none)")
    ap.add_argument("--wrap", default="", help="a command to run stencil under (heaptrack)")
    args = ap.parse_args()
    wb.STENCIL = os.path.abspath(args.stencil)
    marks = sorted({int(x) for x in args.at.split(",") if int(x) <= args.writes})
    etcd = wb.Etcd()
    work = tempfile.mkdtemp(prefix="stencil-soak-")
    st = None
    try:
        etcd.put("soak/v", "0")
        st = SoakStencil(etcd, "v={{ key('soak/v') }}\n", work, args.reload,
                         wrap=args.wrap.split())
        st.wait_ready()
        dest = st.dest("soak")
        pid = wb.stencil_pid(st)
        rows = [(0, rss_kib(pid), rss_kib(pid, "VmHWM"), 0.0)]
        started = time.time()
        for i in range(1, args.writes + 1):
            etcd.put("soak/v", str(i))
            want = f"v={i}\n"
            deadline = time.time() + 30
            while True:
                try:
                    with open(dest) as f:
                        if f.read() == want:
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    sys.exit(f"write {i} did not land; see {st.stderr_path}")
                time.sleep(0.0005)
            if i in marks:
                st.get("/metrics")  # the endpoints are polled in production
                rows.append((i, rss_kib(pid), rss_kib(pid, "VmHWM"), time.time() - started))
                wb.log(f"{i} writes: RSS {rows[-1][1]} KiB")
        time.sleep(10)
        idle = (rss_kib(pid), rss_kib(pid, "VmHWM"))
        writes = st.status()["templates"]
        writes = sum(t["writes"] for t in writes.values())
        print(f"stencil: {wb.STENCIL}; {etcd.version}; {writes} files written\n")
        print("| writes | RSS (KiB) | peak RSS (KiB) | elapsed (s) |")
        print("|---:|---:|---:|---:|")
        for n, rss, hwm, t in rows:
            print(f"| {n} | {rss} | {hwm} | {t:.1f} |")
        print(f"| idle 10 s after | {idle[0]} | {idle[1]} | |")
        base = next((r for r in rows if r[0] == 1000), None)
        if base:
            growth = rows[-1][1] - base[1]
            print(f"\nGrowth from 1,000 to {rows[-1][0]} writes: {growth} KiB "
                  f"({'under' if growth < 1024 else 'OVER'} the 1 MiB target)")
    finally:
        if st:
            st.stop()
        etcd.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
