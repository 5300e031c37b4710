//! Build metadata for `stencil --version` (the git commit and the build
//! date), and how the binary is linked.
//!
//! Plain std and the `git` command, no build dependencies: a crate tarball
//! or a tree without git gets "unknown" for the commit. SOURCE_DATE_EPOCH
//! (reproducible builds) wins over the clock for the date.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A position-dependent executable: the dynamic loader has no relative
    // relocations to apply (19,551 in the PIE, each page of .data.rel.ro
    // written and so copied at start), which cut a one-shot render's CPU by
    // a quarter and its page faults by a third (BENCHMARKS.md, "Start-up
    // experiments"). The cost is ASLR of the binary's own code and data;
    // libraries, heap and stacks stay randomised. Only on Linux, where the
    // C compiler drives the link and understands the flag.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    start_up_layout();
    // Rerun when HEAD moves: HEAD itself (a branch switch) and the branch's
    // ref (a commit). In a worktree both live outside ./.git, so ask git.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={p}");
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STENCIL_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=STENCIL_BUILD_DATE={}", build_date());
}

/// The release binary's functions that start-up runs (a one-shot render,
/// subst, a watch's start and idle loop) are laid out together, first in
/// .text, in the order of
/// `packaging/startup-order.txt` (written by `bench/startup_order.py` from
/// the release build itself). Kernel fault-around maps the binary in 64 KiB
/// windows, so start-up code spread over the whole 7 MiB .text made peak
/// RSS follow the number of windows touched: 40 of them for a render, 7
/// once grouped, and peak RSS went from 6.7 to 3.4 MiB.
///
/// The file names functions by their mangled symbols, which carry a hash of
/// the crate's build settings: a build with other settings, or after a
/// function is renamed, finds some names missing and lays those functions
/// out as before (never an error). So that the names can be read off the
/// very build that ships, the profile keeps symbols (`strip =
/// "debuginfo"`) and the linker strips them here, unless
/// STENCIL_KEEP_SYMBOLS is set (as the script does).
///
/// The layout only where the linker is LLD, the default of Rust 1.90 and
/// later on x86_64 Linux (GNU ld has no `--symbol-ordering-file`), and not
/// when the build picks its own linker; the stripping on any Linux.
fn start_up_layout() {
    println!("cargo:rerun-if-env-changed=STENCIL_KEEP_SYMBOLS");
    println!("cargo:rerun-if-changed=packaging/startup-order.txt");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    if !release || std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    // GNU ld and LLD both take it; the symbols are for the two scripts.
    if std::env::var_os("STENCIL_KEEP_SYMBOLS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    let own_linker = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .is_ok_and(|flags| flags.contains("linker"))
        || std::env::var_os("RUSTC_LINKER").is_some();
    if target != "x86_64-unknown-linux-gnu" || own_linker || !rustc_links_with_lld() {
        return;
    }
    let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("packaging/startup-order.txt");
    if order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        // scripts/build-release asks for the link map, to count how many of
        // the file's names this build still has: a stale file does not fail
        // the link, it only makes start-up slower and larger.
        println!("cargo:rerun-if-env-changed=STENCIL_LINK_MAP");
        if let Some(map) = std::env::var_os("STENCIL_LINK_MAP") {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,-Map,{}",
                std::path::Path::new(&map).display()
            );
        }
    }
}

/// Whether rustc is 1.90 or later, which links x86_64 Linux binaries with
/// its own LLD.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let mut numbers = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The build date as YYYY-MM-DD (UTC).
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let (y, m, d) = civil_from_days(secs / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}
