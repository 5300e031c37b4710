#!/usr/bin/env python3
"""What each crate costs in the release binary (issue 15 item 6).

    python3 bench/binary_size.py [--target-dir DIR] [--top 25]

Builds the release binary with its symbols (STENCIL_KEEP_SYMBOLS=1, which
build.rs reads: the same build but for the linker's --strip-all, so only
the final link is redone) into DIR, /work/target-release by default, then
sums the sizes of its code symbols (`nm -S -C`) by the crate
their demangled path starts with, as cargo-bloat --crates does. The
standard library's generic code counts for the crate whose types it was
instantiated for, trait impls for the first crate the symbol names. With
fat LTO a function inlined into another crate's function counts for that
one. The stripped size of the shipped binary is printed beside it.

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


STD = {"core", "alloc", "std"}


def crate_of(name: str) -> str:
    """The crate a demangled symbol is there for: the first crate its path
    names, except that the standard library's generic code instantiated for
    another crate's types (drop_in_place<minijinja::...>, Arc<T>::drop_slow,
    iterator adapters) counts for that crate."""
    crates = re.findall(r"(?<![A-Za-z0-9_:])([a-z_][a-z0-9_]*)::", name)
    if not crates:
        return "(C / assembly / unattributed)"
    outside_std = [c for c in crates if c not in STD]
    return outside_std[0] if crates[0] in STD and outside_std else crates[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-dir", default="/work/target-release")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-build", action="store_true", help="use DIR/release/stencil as it is (built with STENCIL_KEEP_SYMBOLS=1)")
    args = ap.parse_args()
    target = Path(args.target_dir)
    binary = target / "release" / "stencil"
    if not args.no_build:
        env = dict(os.environ, STENCIL_KEEP_SYMBOLS="1")
        subprocess.run([str(ROOT / "scripts" / "build-release"), "--target-dir", str(target)],
                       cwd=ROOT, env=env, check=True)
    nm = subprocess.run(["nm", "-S", "-C", "--size-sort", str(binary)], capture_output=True, text=True, check=True)
    sizes: collections.Counter[str] = collections.Counter()
    total = 0
    for line in nm.stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[2] not in ("t", "T", "w", "W"):
            continue
        size = int(parts[1], 16)
        sizes[crate_of(parts[3])] += size
        total += size
    sections = subprocess.run(["size", "-A", str(binary)], capture_output=True, text=True, check=True).stdout
    text = next(int(l.split()[1]) for l in sections.splitlines() if l.startswith(".text "))
    stripped = binary.with_name("stencil.stripped")
    subprocess.run(["strip", "-o", str(stripped), str(binary)], check=True)
    shipped = stripped.stat().st_size
    stripped.unlink()
    print(f"stripped binary: {shipped / 2**20:.2f} MiB; .text {text / 2**20:.2f} MiB, "
          f"of which {total / 2**20:.2f} MiB in named functions\n")
    print("| crate | code | share of named code |")
    print("|---|---:|---:|")
    for crate, size in sizes.most_common(args.top):
        print(f"| {crate} | {size / 1024:.0f} KiB | {100 * size / total:.1f}% |")
    rest = sum(s for _, s in sizes.most_common()[args.top:])
    print(f"| (the other {max(len(sizes) - args.top, 0)} crates) | {rest / 1024:.0f} KiB | {100 * rest / total:.1f}% |")


if __name__ == "__main__":
    sys.exit(main())
