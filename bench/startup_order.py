#!/usr/bin/env python3
"""Writes packaging/startup-order.txt: the functions start-up runs, for the
linker to lay out together (build.rs, issue 15 items 1 and 5).

    python3 bench/startup_order.py [--target-dir DIR] [--no-build]

Builds the release binary as it ships (scripts/build-release) with its
symbols (STENCIL_KEEP_SYMBOLS=1: same profile and flags, so the same
mangled names as the shipped build, which the linker strips) into DIR (/work/target-release by default), runs each start-up
workload below under `valgrind --tool=callgrind --demangle=no`, and writes
every function of the binary that ran, workload by workload, one mangled
name per line (C names too: the static build's libc functions). Run it again after a change of dependencies, of the release
profile or of the crate's version (all change the names' hashes) and before
measuring start-up: names that no longer exist are skipped by the linker,
and the functions they named fall back to the default layout.

Workloads (the environment of the nginx one-shot render benchmark):
  render -t nginx.conf.j2              a loop, filters, 15 env reads
  render -t refs.j2                    text and {{ env.X }} only (no compiler)
  render TEMPLATE DATA.yaml            a data file, key()/typed values
  subst '$VARS' < nginx.conf.envsubst  the envsubst drop-in
  watch --once -t T:DEST --data F      the watch loop's start-up, no network
  --version, render --help
  watch -c CONFIG --listen ADDR        10 templates on a real etcd (started
                                       here, as bench/watch_bench.py does):
                                       start-up, /healthz, /status, a change,
                                       2 s of the idle loop, SIGTERM
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import watch_bench as wb  # noqa: E402  (the etcd server, the file waiter)
from render_bench import nginx_env, nginx_shell_format  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "bench" / "fixtures"
ORDER = ROOT / "packaging" / "startup-order.txt"


def workloads(work: Path) -> list[tuple[list[str], str | None]]:
    """(arguments after the binary, stdin file) of each start-up run."""
    shell_format = nginx_shell_format(nginx_env())
    refs = work / "refs.j2"
    refs.write_text("".join(f"line {i} {{{{ env.NGINX_SERVER_NAME }}}}\n" for i in range(50)))
    data = work / "app.yaml"
    data.write_text("db:\n  host: db.internal\n  port: 5432\nfeatures: [a, b]\ndebug: false\n")
    tmpl = work / "app.j2"
    tmpl.write_text('host={{ key("db/host") }}\nport={{ db.port }}\n'
                    '{% for f in features %}feature={{ f | upper }}\n{% endfor %}debug={{ debug }}\n')
    return [
        (["render", "-t", str(FIXTURES / "nginx.conf.j2")], None),
        (["render", "-t", str(refs)], None),
        (["render", str(tmpl), str(data)], None),
        (["subst", shell_format], str(FIXTURES / "nginx.conf.envsubst")),
        (["watch", "--once", "-t", f"{tmpl}:{work / 'app.conf'}", "--data", str(data)], None),
        (["--version"], None),
        (["render", "--help"], None),
    ]


def etcd_watch(binary: Path, work: Path, out: Path) -> None:
    """`stencil watch` of 10 etcd templates under callgrind, through
    start-up, the status endpoints, one change and the idle loop."""
    etcd = wb.Etcd()
    try:
        cfg = ["[sources.kv]", etcd.source_toml()]
        for i in range(10):
            etcd.put(f"order/k{i}", f"v{i}")
            (work / f"t{i}.j2").write_text(f'{{{{ key("order/k{i}") }}}}\n')
            cfg += ["[[templates]]", f'source = "{work / f"t{i}.j2"}"',
                    f'destination = "{work / "out" / f"t{i}.conf"}"', ""]
        (work / "out").mkdir()
        config = work / "stencil.toml"
        config.write_text("\n".join(cfg))
        port = wb.free_port()
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no",
                                 f"--callgrind-out-file={out}", str(binary), "watch", "-c", str(config),
                                 "--listen", f"127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            waiter = wb.FileWaiter(str(work / "out" / "t0.conf"))
            waiter.wait_for(b"v0\n", timeout=120)
            for path in ("/healthz", "/status"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
            etcd.put("order/k0", "changed")
            waiter.wait_for(b"changed\n", timeout=60)
            waiter.close()
            time.sleep(2)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        etcd.close()


def functions_run(callgrind_out: Path, binary: str) -> list[str]:
    """The functions of `binary` in a callgrind profile, in file order."""
    objects: dict[str, str] = {}
    names: dict[str, str] = {}
    current = None
    seen: list[str] = []
    for line in callgrind_out.read_text(errors="replace").splitlines():
        m = re.match(r"^(c?ob)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, ident, name = m.groups()
            if name:
                objects[ident] = name
            if kind == "ob":
                current = objects.get(ident)
            continue
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, ident, name = m.groups()
            if name:
                names[ident] = name
            # A function's own cost lines follow fn=, under the current ob=.
            # Rust's mangled names and, in the static build, libc's C names;
            # not callgrind's "0x..." for code it has no name for.
            if kind == "fn" and current == binary and not names[ident].startswith("0x"):
                # "NAME'2": callgrind's mark for a recursion level (with
                # --separate-recs), not a symbol the linker knows.
                name = re.sub(r"'\d+$", "", names[ident])
                if name not in seen:
                    seen.append(name)
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-dir", default="/work/target-release")
    ap.add_argument("--no-build", action="store_true",
                    help="use DIR/release/stencil as it is (built with STENCIL_KEEP_SYMBOLS=1)")
    args = ap.parse_args()
    binary = Path(args.target_dir).resolve() / "release" / "stencil"
    if not args.no_build:
        env = dict(os.environ, STENCIL_KEEP_SYMBOLS="1")
        subprocess.run([str(ROOT / "scripts" / "build-release"), "--target-dir", args.target_dir],
                       cwd=ROOT, env=env, check=True)
    symbols = subprocess.run(["nm", str(binary)], capture_output=True, text=True).stdout
    if not symbols.strip():
        sys.exit(f"{binary} has no symbols: build it with STENCIL_KEEP_SYMBOLS=1 (or drop --no-build)")
    order: list[str] = []
    known: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="stencil-order-") as tmp:
        work = Path(tmp)
        for argv, stdin in workloads(work):
            out = work / "callgrind.out"
            with open(stdin or os.devnull, "rb") as inp:
                run = subprocess.run(["valgrind", "--tool=callgrind", "--demangle=no",
                                      f"--callgrind-out-file={out}", str(binary), *argv],
                                     stdin=inp, env=nginx_env(), capture_output=True)
            if run.returncode != 0:
                sys.exit(f"stencil {' '.join(argv)} failed:\n{run.stderr.decode(errors='replace')}")
            names = functions_run(out, str(binary))
            new = [n for n in names if n not in known]
            known.update(new)
            order += new
            print(f"{argv[0]}: {len(names)} functions, {len(new)} new", file=sys.stderr)
        out = work / "callgrind.watch"
        etcd_watch(binary, work, out)
        names = functions_run(out, str(binary))
        new = [n for n in names if n not in known]
        order += new
        print(f"watch on etcd: {len(names)} functions, {len(new)} new", file=sys.stderr)
    ORDER.write_text("\n".join(order) + "\n")
    print(f"wrote {len(order)} functions to {ORDER.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
