//! The Debian package: `cargo deb` builds it, `dpkg -i` installs it into
//! this machine, the files are where Debian's tools look for them, and
//! `dpkg -r` leaves nothing behind. Also: the committed completions match
//! what the binary prints.
//!
//! The package test changes the machine (it runs as root, or through
//! `sudo -n`), so it refuses to run when a stencil package is already
//! installed rather than remove someone's install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::BIN;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "stencil.bash"),
    ("zsh", "_stencil"),
    ("fish", "stencil.fish"),
];

#[test]
fn completions_are_up_to_date() {
    for (shell, file) in COMPLETIONS {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let committed = std::fs::read(Path::new(ROOT).join("packaging/completions").join(file))
            .unwrap_or_default();
        assert!(
            committed == out.stdout,
            "packaging/completions/{file} is stale: run \
             `cargo run -q -- completions {shell} > packaging/completions/{file}` and commit it"
        );
    }
}

/// Runs a command that needs root: directly as root, else with `sudo -n`.
fn as_root(program: &str) -> Command {
    if nix::unistd::geteuid().is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn installed() -> bool {
    Command::new("dpkg")
        .args(["-s", "stencil"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Removes the package if the test fails half-way, so the next run starts
/// clean.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let _ = as_root("dpkg").args(["-r", "stencil"]).output();
        }
    }
}

/// Builds the .deb from the binary this test run built: cargo-deb packages
/// `target/release/stencil`, so a target directory of our own holds a copy
/// there (no second, release build inside the test run; the package's
/// layout is what is under test, not the optimiser).
fn build_deb(tmp: &Path) -> PathBuf {
    let release = tmp.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(BIN, release.join("stencil")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(ROOT)
        .env("CARGO_TARGET_DIR", tmp.join("target"))
        .args(["deb", "--no-build", "--fast", "--strip", "--quiet", "-o"])
        .arg(tmp.join("out")));
    std::fs::read_dir(tmp.join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote no .deb")
}

fn man_w(page: &str) -> String {
    let out = run(Command::new("man").args(["-w", page]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `systemd-analyze verify` exits 0 on some problems (unknown keys) and
/// only says so on stderr: neither may mention the unit.
fn verify_unit(unit: &str) {
    let out = run(Command::new("systemd-analyze").args(["verify", "--man=no", unit]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("stencil"),
        "systemd-analyze verify {unit}:\n{stderr}"
    );
}

fn check_installed_files() {
    assert_eq!(
        man_w("stencil.toml.5"),
        "/usr/share/man/man5/stencil.toml.5.gz"
    );
    assert_eq!(
        man_w("stencil-templates.7"),
        "/usr/share/man/man7/stencil-templates.7.gz"
    );
    for page in ["stencil", "stencil-render", "stencil-exec", "stencil-subst"] {
        assert_eq!(man_w(page), format!("/usr/share/man/man1/{page}.1.gz"));
    }
    for path in [
        "/usr/share/bash-completion/completions/stencil",
        "/usr/share/zsh/vendor-completions/_stencil",
        "/usr/share/fish/vendor_completions.d/stencil.fish",
        "/usr/lib/systemd/system/stencil.service",
        "/usr/lib/systemd/system/stencil@.service",
    ] {
        assert!(Path::new(path).is_file(), "{path} is not installed");
    }
    verify_unit("/usr/lib/systemd/system/stencil.service");
    // A template unit is verified through an instance of it.
    verify_unit("stencil@web.service");

    let version = run(Command::new("/usr/bin/stencil").arg("--version"));
    let version = String::from_utf8(version.stdout).unwrap();
    assert!(
        version.starts_with(&format!("stencil {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    // The example config is valid as shipped.
    run(Command::new("/usr/bin/stencil").args([
        "check",
        "-c",
        "/usr/share/doc/stencil/examples/stencil.toml",
    ]));
}

#[test]
fn deb_installs_works_and_removes_cleanly() {
    assert!(
        !installed(),
        "a stencil package is installed on this machine; this test installs and removes \
         its own: run `dpkg -r stencil` first"
    );
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path());

    let guard = Installed;
    run(as_root("dpkg").arg("-i").arg(&deb));
    let listed = run(Command::new("dpkg").args(["-L", "stencil"]));
    let listed: Vec<PathBuf> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    check_installed_files();

    run(as_root("dpkg").args(["-r", "stencil"]));
    drop(guard);
    assert!(!installed(), "dpkg -r left the package installed");
    // Every file is gone, and every directory only stencil used.
    for path in &listed {
        if path.is_dir() {
            assert!(
                !path.ends_with("stencil") && !path.ends_with("examples"),
                "{} is left behind",
                path.display()
            );
        } else {
            assert!(!path.exists(), "{} is left behind", path.display());
        }
    }
    assert!(!Path::new("/usr/bin/stencil").exists());
    assert!(!Path::new("/usr/share/doc/stencil").exists());
}
