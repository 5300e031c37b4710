//! `stencil exec` with real processes: exec keeps the PID, argv and
//! environment; `--watch` forwards signals, maps exit statuses, escalates to
//! SIGKILL and reaps orphans; `--wait` waits for TCP, HTTP and files.
//!
//! Signals are sent to stencil's PID and their arrival is read from a file
//! the child's trap handlers append to, polled with a deadline.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::support::{BIN, Test};

/// Generous: these tests share two cores with a full build.
const DEADLINE: Duration = Duration::from_secs(20);

#[track_caller]
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// stencil running in the background (with the environment of
/// [`with_template`]), its output going to files in the test directory. Dropping it kills stencil and the child's group (whose
/// PID the child scripts write to `pid`).
struct Running {
    child: Child,
    dir: PathBuf,
}

impl Running {
    fn start(t: &Test, args: &[&str]) -> Running {
        let dir = t.dir_path().to_path_buf();
        let child = Command::new(BIN)
            .args(args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORT", "8080")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stencil.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("stencil.err")).unwrap())
            .spawn()
            .expect("spawn stencil");
        Running { child, dir }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stencil.err")).unwrap_or_default()
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(rel)).ok()
    }

    /// Waits until stencil logged `needle`.
    #[track_caller]
    fn logged(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.stderr().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "stencil exited ({status}) before it logged {needle:?}\n{}",
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "stencil never logged {needle:?}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the child script wrote `ready` (its traps are set).
    #[track_caller]
    fn ready(&mut self) {
        let dir = self.dir.clone();
        let start = Instant::now();
        while !dir.join("ready").exists() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("stencil exited ({status}) early\n{}", self.stderr());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the child never got ready\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[track_caller]
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "stencil did not exit\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[track_caller]
    fn exits_with(&mut self, code: i32) {
        let status = self.wait();
        assert_eq!(
            status.code(),
            Some(code),
            "stencil: {status}\n{}",
            self.stderr()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = self.read("pid").and_then(|p| p.trim().parse().ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A template and the file it renders to, so every test goes through the
/// render first as a user's entrypoint would.
fn with_template() -> Test {
    Test::new()
        .file("app.conf.j2", "port={{ env.PORT }}\n")
        .env("PORT", "8080")
}

const RENDER: [&str; 3] = ["exec", "-t", "app.conf.j2:app.conf"];

fn exec_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = RENDER.to_vec();
    v.extend_from_slice(extra);
    v
}

// ---------------------------------------------------------------------------
// exec(2): stencil becomes the app.

#[test]
fn exec_keeps_the_pid() {
    // The wrapper prints its PID and execs stencil (same PID), which renders
    // and execs the app, which prints its PID: one PID from start to end.
    let out = with_template()
        .via(["sh", "-c", "echo $$; exec \"$0\" \"$@\""])
        .args(exec_args(&["--", "sh", "-c", "cat app.conf; echo $$"]))
        .run()
        .success();
    let stdout = out.stdout_str();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[1], "port=8080");
    assert_eq!(lines[0], lines[2], "the app runs under another PID");
}

#[test]
fn exec_passes_arguments_exactly() {
    let mut args: Vec<OsString> = exec_args(&["--", "sh", "-c", "printf '[%s]\\n' \"$@\"", "sh"])
        .into_iter()
        .map(OsString::from)
        .collect();
    for a in [
        "a b",
        "",
        "it's \"quoted\"",
        "-x",
        "--",
        "$HOME",
        "*",
        "multi\nline",
    ] {
        args.push(a.into());
    }
    args.push(OsString::from_vec(b"caf\xe9".to_vec()));
    let out = with_template().args(args).run().success();
    assert_eq!(
        out.stdout,
        b"[a b]\n[]\n[it's \"quoted\"]\n[-x]\n[--]\n[$HOME]\n[*]\n[multi\nline]\n[caf\xe9]\n"
    );
}

#[test]
fn exec_passes_the_environment_exactly() {
    let out = with_template()
        .env("APP_SECRET", "x y=z\n2")
        .env("EMPTY", "")
        .args(exec_args(&["--", "env", "-0"]))
        .run()
        .success();
    let mut got: Vec<String> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    got.sort();
    let mut want = vec![
        "APP_SECRET=x y=z\n2".to_string(),
        "EMPTY=".into(),
        format!("PATH={}", std::env::var("PATH").unwrap_or_default()),
        "PORT=8080".into(),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// Whether a `SigIgn:\tHEX` line from /proc/PID/status has SIGPIPE ignored.
#[track_caller]
fn ignores_sigpipe(line: &str) -> bool {
    let hex = line.trim().strip_prefix("SigIgn:").expect(line).trim();
    let mask = u64::from_str_radix(hex, 16).unwrap();
    mask & (1 << (Signal::SIGPIPE as u32 - 1)) != 0
}

#[test]
fn exec_app_does_not_inherit_an_ignored_sigpipe() {
    // Rust ignores SIGPIPE; an ignored signal survives exec(2).
    let out = with_template()
        .args(exec_args(&["--", "grep", "SigIgn", "/proc/self/status"]))
        .run()
        .success();
    assert!(!ignores_sigpipe(&out.stdout_str()), "{}", out.stdout_str());
}

#[test]
fn exec_passes_the_exit_status_through() {
    with_template()
        .args(exec_args(&["--", "sh", "-c", "exit 42"]))
        .run()
        .code(42);
}

#[test]
fn failed_render_exits_1_and_the_app_never_starts() {
    Test::new()
        .file("app.conf.j2", "port={{ env.PORT }}\n")
        .args(exec_args(&["--", "touch", "started"]))
        .run()
        .code(1)
        .stderr_has("app.conf.j2")
        .stderr_has("PORT")
        .no_file("started")
        .no_file("app.conf");
}

#[test]
fn no_reload_command_runs_before_the_app_starts() {
    // There is nothing to reload yet; a failing reload would keep the app
    // from starting.
    with_template()
        .args([
            "exec",
            "-t",
            "app.conf.j2:app.conf:touch reloaded; exit 1",
            "--",
            "cat",
            "app.conf",
        ])
        .run()
        .success()
        .stdout_is("port=8080\n")
        .no_file("reloaded");
}

#[test]
fn command_not_found_exits_127() {
    with_template()
        .args(exec_args(&["--", "no-such-app-stencil"]))
        .run()
        .code(127)
        .stderr_has("cannot run `no-such-app-stencil`");
}

#[test]
fn no_command_is_a_usage_error() {
    with_template()
        .args(RENDER)
        .run()
        .code(2)
        .stderr_has("no command to run");
}

#[test]
fn command_from_the_exec_table_and_dash_dash_wins() {
    let t = with_template().file(
        "stencil.toml",
        "[[templates]]\nsource = \"app.conf.j2\"\ndestination = \"app.conf\"\n\n\
         [exec]\ncommand = [\"sh\", \"-c\", \"echo from config\"]\nkill_timeout = \"3s\"\n",
    );
    let t = t.args(["exec", "-c", "stencil.toml"]);
    t.run().success().stdout_is("from config\n");
    t.args(["exec", "-c", "stencil.toml", "--", "echo", "from flags"])
        .run()
        .success()
        .stdout_is("from flags\n");
}

#[test]
fn exec_table_string_command_runs_with_sh() {
    with_template()
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"app.conf.j2\"\ndestination = \"app.conf\"\n\n\
             [exec]\ncommand = \"echo $PORT && cat app.conf\"\n",
        )
        .args(["exec", "-c", "stencil.toml"])
        .run()
        .success()
        .stdout_is("8080\nport=8080\n");
}

#[test]
fn bad_exec_table_names_line_and_column() {
    let t = with_template().file(
        "stencil.toml",
        "[[templates]]\nsource = \"app.conf.j2\"\n\n[exec]\nreload_signal = \"SIGNOPE\"\n",
    );
    t.args(["exec", "-c", "stencil.toml", "--", "true"])
        .run()
        .code(2)
        .stderr_has("stencil.toml")
        .stderr_has("line 5")
        .stderr_has("unknown signal \"SIGNOPE\"");
    with_template()
        .file(
            "stencil.toml",
            "[[templates]]\nsource = \"app.conf.j2\"\n\n[exec]\nrestart = true\n",
        )
        .args(["exec", "-c", "stencil.toml", "--", "true"])
        .run()
        .code(2)
        .stderr_has("line 5")
        .stderr_has("restart");
}

#[test]
fn bad_flags_are_usage_errors() {
    with_template()
        .args(exec_args(&["--wait", "db:5432", "--", "true"]))
        .run()
        .code(2)
        .stderr_has("tcp://db:5432");
    with_template()
        .args(exec_args(&["--reload-signal", "SIGKILL", "--", "true"]))
        .run()
        .code(2)
        .stderr_has("cannot be the reload signal");
}

// ---------------------------------------------------------------------------
// --wait

/// A port on 127.0.0.1 that refuses connections until [`ClosedPort::open`]
/// and that nothing else can take meanwhile: its socket is bound, not yet
/// listening. (A port found free, closed and bound again later may have
/// been taken in between.)
struct ClosedPort(tokio::net::TcpSocket);

impl ClosedPort {
    fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        ClosedPort(socket)
    }

    fn url(&self) -> String {
        format!("tcp://{}", self.0.local_addr().unwrap())
    }

    /// Starts listening; connections are accepted by the kernel while the
    /// listener lives.
    fn open(self) -> TcpListener {
        // tokio registers a listener with a reactor, then hands it back.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _in_runtime = rt.enter();
        self.0.listen(16).unwrap().into_std().unwrap()
    }
}

#[test]
fn waits_for_a_tcp_port_that_opens_later() {
    let port = ClosedPort::new();
    let url = port.url();
    let t = with_template();
    let mut run = Running::start(
        &t,
        &exec_args(&[
            "--wait",
            &url,
            "--wait-timeout",
            "30s",
            "--",
            "echo",
            "started",
        ]),
    );
    // The condition under test: the port opens once stencil found it closed.
    run.logged(&format!("waiting for {url}: connection refused"));
    let _listener = port.open();
    run.exits_with(0);
    assert_eq!(run.read("stencil.out").unwrap(), "started\n");
}

#[test]
fn a_wait_that_times_out_names_the_dependency() {
    let port = ClosedPort::new();
    let url = port.url();
    with_template()
        .args(exec_args(&[
            "--wait",
            &url,
            "--wait-timeout",
            "300ms",
            "--",
            "touch",
            "started",
        ]))
        .run()
        .code(1)
        .stderr_has(&format!(
            "timed out after 300ms waiting for {url}: connection refused"
        ))
        .no_file("started");
}

/// Answers `statuses` in turn (the last one from then on) to HTTP requests,
/// recording each request line.
fn http_server(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let status = statuses[n.min(statuses.len() - 1)];
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
            if tx.send(line.trim().to_string()).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn http_wait_needs_a_2xx_answer() {
    let (url, requests) = http_server(vec![503, 503, 204]);
    with_template()
        .args(exec_args(&[
            "--wait",
            &url,
            "--wait-timeout",
            "30s",
            "--",
            "echo",
            "started",
        ]))
        .run()
        .success()
        .stdout_is("started\n")
        .stderr_has(&format!("waiting for {url}: HTTP 503"));
    let seen: Vec<String> = requests.try_iter().collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], "GET /healthz HTTP/1.1");
}

#[test]
fn http_wait_that_never_gets_2xx_times_out() {
    let (url, _requests) = http_server(vec![500]);
    with_template()
        .args(exec_args(&[
            "--wait",
            &url,
            "--wait-timeout",
            "300ms",
            "--",
            "touch",
            "started",
        ]))
        .run()
        .code(1)
        .stderr_has(&format!("waiting for {url}: HTTP 500"))
        .no_file("started");
}

#[test]
fn waits_for_a_file() {
    let t = with_template();
    let secret = t.path("secret");
    let url = format!("file://{}", secret.display());
    let mut run = Running::start(
        &t,
        &exec_args(&[
            "--wait",
            &url,
            "--wait-timeout",
            "30s",
            "--",
            "cat",
            "secret",
        ]),
    );
    // The condition under test: the file appears once stencil found it
    // missing.
    run.logged(&format!(
        "waiting for {url}: {} does not exist",
        secret.display()
    ));
    std::fs::write(secret, "s3cret").unwrap();
    run.exits_with(0);
    assert_eq!(run.read("stencil.out").unwrap(), "s3cret");
    with_template()
        .args(exec_args(&[
            "--wait",
            "file:///nonexistent/stencil-test",
            "--wait-timeout",
            "100ms",
            "--",
            "true",
        ]))
        .run()
        .code(1)
        .stderr_has("waiting for file:///nonexistent/stencil-test: /nonexistent/stencil-test does not exist");
}

#[test]
fn several_waits_from_the_environment() {
    let t = with_template().file("a", "").file("b", "");
    let urls = format!(
        "file://{} file://{}",
        t.path("a").display(),
        t.path("b").display()
    );
    t.env("STENCIL_WAIT", urls)
        .args(exec_args(&["--", "echo", "ok"]))
        .run()
        .success();
}

// ---------------------------------------------------------------------------
// --watch: supervision.

/// A child that records each forwarded signal in `got`, once per delivery.
const RECORDER: &str = r#"
echo $$ > pid
for s in HUP INT QUIT USR1 USR2 WINCH; do trap "echo $s >> got" $s; done
trap 'echo TERM >> got; exit 5' TERM
echo > ready
while :; do sleep 0.05; done
"#;

#[test]
fn watch_forwards_each_signal_once() {
    let t = with_template();
    let mut run = Running::start(
        &t,
        &exec_args(&[
            "--watch",
            "--kill-timeout",
            "60s",
            "--",
            "sh",
            "-c",
            RECORDER,
        ]),
    );
    run.ready();
    let mut expected = String::new();
    for sig in [
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGINT,
    ] {
        run.signal(sig);
        expected.push_str(&sig.as_str()[3..]);
        expected.push('\n');
        poll(&format!("{sig} to arrive"), || {
            (run.read("got").unwrap_or_default() == expected).then_some(())
        });
    }
    run.signal(Signal::SIGTERM);
    run.exits_with(5);
    expected.push_str("TERM\n");
    // Exactly once each: a duplicate would show here.
    assert_eq!(run.read("got").unwrap(), expected);
}

#[test]
fn watch_child_has_its_own_group_and_no_ignored_sigpipe() {
    let out = with_template()
        .args(exec_args(&[
            "--watch",
            "--",
            "sh",
            "-c",
            "read -r pid comm state ppid pgrp rest < /proc/$$/stat; \
             [ \"$pid\" = \"$pgrp\" ] && echo own-group; grep SigIgn /proc/$$/status",
        ]))
        .run()
        .success();
    let stdout = out.stdout_str();
    let (group, sigign) = stdout.split_once('\n').unwrap();
    assert_eq!(group, "own-group");
    assert!(!ignores_sigpipe(sigign), "{sigign}");
}

#[test]
fn watch_passes_exit_codes_and_128_plus_signal() {
    with_template()
        .args(exec_args(&["--watch", "--", "sh", "-c", "exit 42"]))
        .run()
        .code(42);
    with_template()
        .args(exec_args(&["--watch", "--", "sh", "-c", "kill -USR1 $$"]))
        .run()
        .code(128 + 10);
    // SIGTERM forwarded to a child without a handler: 128+15.
    let t = with_template();
    let mut run = Running::start(
        &t,
        &exec_args(&[
            "--watch",
            "--",
            "sh",
            "-c",
            "echo $$ > pid; echo > ready; exec sleep 60",
        ]),
    );
    run.ready();
    run.signal(Signal::SIGTERM);
    run.exits_with(143);
}

#[test]
fn watch_kill_signal_is_what_sigterm_sends() {
    let t = with_template();
    let mut run = Running::start(
        &t,
        &exec_args(&[
            "--watch",
            "--kill-signal",
            "SIGUSR2",
            "--kill-timeout",
            "60s",
            "--",
            "sh",
            "-c",
            RECORDER,
        ]),
    );
    run.ready();
    run.signal(Signal::SIGTERM);
    poll("SIGUSR2 to arrive", || {
        (run.read("got").unwrap_or_default() == "USR2\n").then_some(())
    });
    run.signal(Signal::SIGINT);
    poll("SIGINT to arrive", || {
        (run.read("got").unwrap_or_default() == "USR2\nINT\n").then_some(())
    });
    // Still running: neither arrival killed it; end it the hard way.
    assert!(run.child.try_wait().unwrap().is_none());
}

#[test]
fn watch_sigkills_the_group_after_the_kill_timeout() {
    let t = with_template();
    // The shell and its sleeps ignore SIGTERM (an ignored disposition is
    // inherited).
    let mut run = Running::start(
        &t,
        &exec_args(&[
            "--watch",
            "--kill-timeout",
            "500ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo $$ > pid; echo > ready; while :; do sleep 0.05; done",
        ]),
    );
    run.ready();
    let pgid: i32 = run.read("pid").unwrap().trim().parse().unwrap();
    run.signal(Signal::SIGTERM);
    run.exits_with(137);
    assert!(run.stderr().contains("SIGKILL"), "{}", run.stderr());
    // Nothing of the group is left.
    poll("the group to be gone", || {
        killpg(Pid::from_raw(pgid), None).is_err().then_some(())
    });
}

/// (pid, state) of each child of `parent`, from /proc.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut stat = String::new();
        if f.read_to_string(&mut stat).is_err() {
            continue;
        }
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 2..].split(' ');
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == parent {
            out.push((pid, state));
        }
    }
    out
}

#[test]
fn watch_reaps_orphaned_zombies() {
    let t = with_template();
    // Two orphans: one in the child's process group, one that left it with
    // setsid. Both are reparented to stencil (a subreaper) and die soon.
    let mut run = Running::start(
        &t,
        &exec_args(&[
            "--watch",
            "--",
            "sh",
            "-c",
            "echo $$ > pid; (sleep 1 &); (setsid sleep 1 &); echo > ready; exec sleep 60",
        ]),
    );
    run.ready();
    let stencil = run.child.id();
    let main: u32 = run.read("pid").unwrap().trim().parse().unwrap();
    // The orphans come to stencil...
    poll("the orphans to be reparented to stencil", || {
        let others = children_of(stencil)
            .into_iter()
            .filter(|(p, _)| *p != main)
            .count();
        (others == 2).then_some(())
    });
    // ...and once they exit, nothing but the main child is left: no zombie.
    poll("the orphans to be reaped", || {
        let left: Vec<_> = children_of(stencil)
            .into_iter()
            .filter(|(p, _)| *p != main)
            .collect();
        left.is_empty().then_some(())
    });
    assert!(
        children_of(stencil).iter().all(|(_, s)| *s != 'Z'),
        "zombies left"
    );
    run.signal(Signal::SIGTERM);
    run.exits_with(143);
}

#[test]
fn watch_reload_commands_get_their_own_status() {
    // Under --watch the reaper owns waitpid: the reload command's status
    // must still reach the pipeline, not be reaped as an orphan's (which
    // would end in a timeout).
    let t = with_template();
    let mut run = Running::start(
        &t,
        &[
            "exec",
            "-t",
            "app.conf.j2:app.conf:echo reloaded >> reloads; exit 3",
            "--watch",
            "--",
            "sh",
            "-c",
            RECORDER,
        ],
    );
    run.ready();
    std::fs::write(t.path("app.conf.j2"), "port={{ env.PORT }}\nchanged\n").unwrap();
    run.logged("failed (exit status 3)");
    assert_eq!(run.read("reloads").unwrap(), "reloaded\n");
    assert_eq!(run.read("app.conf").unwrap(), "port=8080\nchanged\n");
    run.signal(Signal::SIGTERM);
    run.exits_with(5);
}

#[test]
fn watch_command_not_found_exits_127() {
    with_template()
        .args(exec_args(&["--watch", "--", "no-such-app-stencil"]))
        .run()
        .code(127);
}

#[test]
fn exec_help_has_the_dockerfile_example_and_signal_table() {
    let out = Test::new().args(["exec", "--help"]).run().success();
    let help = out.stdout_str();
    for needle in [
        "ENTRYPOINT",
        "--wait tcp://db:5432",
        "SIGWINCH",
        "--kill-timeout",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}\n{help}");
    }
}

#[test]
fn watch_takes_a_reloaded_exec_table() {
    // The config is read once per run, and again when it changes: a new
    // reload_signal in [exec] is what the app gets after the next change.
    let config = |signal: &str| {
        format!(
            "[[templates]]\nsource = \"app.conf.j2\"\ndestination = \"app.conf\"\n\n\
             [exec]\nreload_signal = \"{signal}\"\n"
        )
    };
    let t = with_template().file("stencil.toml", config("SIGUSR1"));
    let mut run = Running::start(
        &t,
        &[
            "exec",
            "-c",
            "stencil.toml",
            "--watch",
            "--",
            "sh",
            "-c",
            RECORDER,
        ],
    );
    run.ready();
    std::fs::write(t.path("app.conf.j2"), "port={{ env.PORT }}\none\n").unwrap();
    poll("the first reload signal", || {
        (run.read("got").unwrap_or_default() == "USR1\n").then_some(())
    });
    std::fs::write(t.path("stencil.toml"), config("SIGUSR2")).unwrap();
    run.logged("configuration reloaded");
    std::fs::write(t.path("app.conf.j2"), "port={{ env.PORT }}\ntwo\n").unwrap();
    poll("the reloaded reload signal", || {
        (run.read("got").unwrap_or_default() == "USR1\nUSR2\n").then_some(())
    });
    assert_eq!(run.read("app.conf").unwrap(), "port=8080\ntwo\n");
    run.signal(Signal::SIGTERM);
    run.exits_with(5);
}

#[test]
fn wait_alone_needs_no_template() {
    // dockerize and wait-for-it users: `stencil exec --wait … -- app`.
    let t = Test::new().file("ready", "");
    let url = format!("file://{}", t.path("ready").display());
    t.args(["exec", "--wait", &url, "--", "sh", "-c", "echo started"])
        .run()
        .success()
        .stdout_is("started\n");
    // Neither a template nor a wait: still nothing to do.
    Test::new()
        .args(["exec", "--", "true"])
        .run()
        .code(2)
        .stderr_has("no templates");
}

/// A shell app with a helper in the background: the helper has no handler
/// for SIGHUP, so it dies of one sent to the group.
const APP_WITH_HELPER: &str = r#"trap 'echo HUP >> got' HUP
trap 'exit 0' TERM
sleep 300 &
echo $! > helper
echo > ready
while :; do sleep 0.05; done
"#;

fn alive(pid: i32) -> bool {
    // A zombie is dead for this purpose: it is waiting to be reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn watch_reload_signal_goes_to_the_app_alone_unless_signal_group() {
    for group in [false, true] {
        let t = Test::new()
            .file("a.j2", "v={{ key('v') }}\n")
            .file("d.json", r#"{"v": "1"}"#)
            .file("app.sh", APP_WITH_HELPER);
        let mut args = vec!["exec", "--watch", "--data", "d.json", "-t", "a.j2:a.conf"];
        if group {
            args.push("--signal-group");
        }
        args.extend(["--", "sh", "app.sh"]);
        let mut run = Running::start(&t, &args);
        run.ready();
        let helper: i32 = poll("the helper's pid", || {
            run.read("helper").and_then(|s| s.trim().parse().ok())
        });
        std::fs::write(t.path("d.json"), r#"{"v": "2"}"#).unwrap();
        poll("the reload signal", || {
            (run.read("got").unwrap_or_default() == "HUP\n").then_some(())
        });
        if group {
            poll("the helper to die of SIGHUP", || {
                (!alive(helper)).then_some(())
            });
        } else {
            assert!(
                alive(helper),
                "the app's helper died of the app's reload signal"
            );
        }
        run.signal(Signal::SIGTERM);
        run.exits_with(0);
        let _ = nix::sys::signal::kill(Pid::from_raw(helper), Signal::SIGKILL);
    }
}
