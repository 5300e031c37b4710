//! The integration tests' builder: a temp directory with files, an
//! environment, arguments; run the real binary; assert on what a user sees.
//!
//! ```ignore
//! Test::new()
//!     .file("a.j2", "port {{ env.PORT }}\n")
//!     .env("PORT", "80")
//!     .args(["render", "-t", "a.j2:out.conf"])
//!     .run()
//!     .success()
//!     .file_is("out.conf", "port 80\n");
//! ```
//!
//! The child's environment is cleared except PATH, so the host's variables
//! never leak into a render.

#![allow(dead_code)]

pub mod consul;
pub mod etcd;
pub mod watch;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_stencil");

/// A test of the `stencil` binary, built step by step; nothing runs until
/// [`run`](Test::run) or [`spawn`](Test::spawn).
/// What stencil logs once its status server listens, before the address.
pub const SERVING: &str = "serving /healthz, /readyz, /metrics, /status on ";

/// GET on stencil's status server: (status code, body), or None while it
/// is not up.
pub fn status_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    consul::http::get(&format!("http://{addr}{path}"))
        .try_send()
        .ok()
        .map(|r| (r.status, r.text()))
}

#[must_use = "a Test does nothing until .run() or .spawn()"]
pub struct Test {
    // Shared with every Output, so the directory outlives the Test
    // temporary in `Test::new()...run()` chains.
    dir: std::rc::Rc<tempfile::TempDir>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    unprivileged: bool,
    via: Vec<OsString>,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: std::rc::Rc::new(tempfile::tempdir().expect("temp dir")),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            unprivileged: false,
            via: Vec::new(),
        }
    }

    /// Runs stencil through a wrapper: `via(["sh", "-c", "…; exec \"$0\" \"$@\""])`
    /// runs the wrapper with stencil's path and arguments appended.
    #[must_use = "a Test does nothing until .run() or .spawn()"]
    pub fn via<I, S>(mut self, wrapper: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.via = wrapper.into_iter().map(Into::into).collect();
        self
    }

    /// Runs stencil as an ordinary user even when the tests run as root
    /// (CI does), so permission errors are real: root ignores file modes.
    #[must_use = "a Test does nothing until .run() or .spawn()"]
    pub fn unprivileged(mut self) -> Test {
        self.unprivileged = true;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Writes a file (creating its directories) relative to the test dir.
    #[must_use = "a Test does nothing until .run() or .spawn()"]
    pub fn file(self, rel: &str, content: impl AsRef<[u8]>) -> Test {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        self
    }

    #[must_use = "a Test does nothing until .run() or .spawn()"]
    pub fn mode(self, rel: &str, mode: u32) -> Test {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    #[must_use = "a Test does nothing until .run() or .spawn()"]
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Test {
        self.env.push((k.into(), v.into()));
        self
    }

    #[must_use = "a Test does nothing until .run() or .spawn()"]
    pub fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    #[must_use = "a Test does nothing until .run() or .spawn()"]
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Test {
        self.stdin = Some(input.into());
        self
    }

    /// Runs `stencil` with the args in the test dir.
    #[must_use = "check the Output: .success(), .code(N), …"]
    pub fn run(&self) -> Output {
        let mut cmd = self.command();
        cmd.args(&self.args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if self.unprivileged && nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            cmd.uid(65534).gid(65534);
        }
        let mut child = cmd.spawn().expect("spawn stencil");
        let input = self.stdin.clone().unwrap_or_default();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait for stencil");
        writer.join().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            dir: self.dir.path().to_path_buf(),
            _keep: self.dir.clone(),
            args: self.args.clone(),
        }
    }
}

impl Test {
    /// stencil, or the wrapper of [`Test::via`] running it.
    fn command(&self) -> Command {
        match self.via.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        }
    }

    /// Starts `stencil` in the background (watch, exec) with the args; its
    /// stdout and stderr go to files outside the test directory, so they
    /// never look like data changes.
    pub fn spawn(&self) -> Running {
        let logs = tempfile::tempdir().unwrap();
        let stdout = std::fs::File::create(logs.path().join("stdout")).unwrap();
        let stderr = std::fs::File::create(logs.path().join("stderr")).unwrap();
        let mut cmd = self.command();
        cmd.args(&self.args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn stencil");
        Running {
            child,
            logs,
            dir: self.dir.path().to_path_buf(),
            _keep: self.dir.clone(),
        }
    }
}

/// A stencil running in the background; killed on drop.
#[must_use = "stencil is killed when the Running is dropped"]
pub struct Running {
    child: std::process::Child,
    logs: tempfile::TempDir,
    pub dir: PathBuf,
    _keep: std::rc::Rc<tempfile::TempDir>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid fits in pid_t")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit; its exit code (128+N for signal N).
    #[track_caller]
    pub fn wait_exit(&mut self, within: std::time::Duration) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stencil did not exit within {within:?}\n--- stderr\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The address of the `n`th (from 1) status server stencil logged it
    /// serves on. Tests listen on port 0 and read the port here: a port
    /// the test picked free could be taken before stencil binds it. A text
    /// log line ends with the address; a JSON one quotes it.
    #[track_caller]
    pub fn serving_on(&mut self, n: usize) -> std::net::SocketAddr {
        self.wait_for(&format!("status server {n} to be logged"), |r| {
            let stderr = r.stderr();
            let line = stderr.lines().filter(|l| l.contains(SERVING)).nth(n - 1)?;
            let (_, rest) = line.split_once(SERVING)?;
            let addr = rest.split(['"', ' ']).next()?;
            Some(addr.trim().parse().expect("a socket address"))
        })
    }

    /// Polls `check` until it returns Some, or fails the test after 30 s
    /// showing stencil's stderr.
    #[track_caller]
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        mut check: impl FnMut(&mut Running) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "stencil exited ({status}) while waiting for {what}\n--- stderr\n{}",
                    self.stderr()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}\n--- stderr\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Waits until `rel` holds exactly `expected`.
    #[track_caller]
    pub fn wait_file(&mut self, rel: &str, expected: &str) {
        let path = self.dir.join(rel);
        self.wait_for(&format!("{rel} to be {expected:?}"), |_| {
            (std::fs::read_to_string(&path).ok().as_deref() == Some(expected)).then_some(())
        })
    }

    pub fn file(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(rel)).ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub dir: PathBuf,
    _keep: std::rc::Rc<tempfile::TempDir>,
    args: Vec<OsString>,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "stencil {:?}\nexit code: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    #[track_caller]
    pub fn success(self) -> Output {
        assert_eq!(self.code, 0, "expected success\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Output {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn stdout_is(self, expected: &str) -> Output {
        assert_eq!(
            self.stdout_str(),
            expected,
            "stdout differs\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Output {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn stderr_lacks(self, needle: &str) -> Output {
        assert!(
            !self.stderr.contains(needle),
            "stderr has {needle:?}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn file_is(self, rel: &str, expected: &str) -> Output {
        let path = self.dir.join(rel);
        let got = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", path.display(), self.describe()));
        assert_eq!(got, expected, "{rel} differs\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn no_file(self, rel: &str) -> Output {
        assert!(
            !self.dir.join(rel).exists(),
            "{rel} should not exist\n{}",
            self.describe()
        );
        self
    }

    /// No staged file (`.NAME.stencil-XXXXXX`) is left in `rel_dir`.
    #[track_caller]
    pub fn no_staged_files(self, rel_dir: &str) -> Output {
        let dir = self.dir.join(rel_dir);
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".stencil-"))
            .collect();
        assert!(
            left.is_empty(),
            "staged files left: {left:?}\n{}",
            self.describe()
        );
        self
    }
}
