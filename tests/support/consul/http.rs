//! A plain HTTP/1.1 client on std's TcpStream, one connection per call, so
//! tests see exactly what went over the wire: status, headers, body, or a
//! connection closed without any reply.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;

use super::Entry;

pub struct Call {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

pub fn get(url: &str) -> Call {
    Call::new("GET", url)
}

pub fn put(url: &str, body: impl AsRef<[u8]>) -> Call {
    Call::new("PUT", url).body(body)
}

pub fn delete(url: &str) -> Call {
    Call::new("DELETE", url)
}

impl Call {
    pub fn new(method: &str, url: &str) -> Call {
        Call {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            // Longer than any wait the tests use, so a blocking query
            // that should return but hangs fails instead of hanging.
            timeout: Duration::from_secs(120),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn token(self, token: &str) -> Call {
        self.header("X-Consul-Token", token)
    }

    pub fn body(mut self, body: impl AsRef<[u8]>) -> Call {
        self.body = body.as_ref().to_vec();
        self
    }

    pub fn timeout(mut self, d: Duration) -> Call {
        self.timeout = d;
        self
    }

    #[track_caller]
    pub fn send(self) -> Reply {
        let what = format!("{} {}", self.method, self.url);
        self.try_send().unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Err when the connection fails or closes without a full reply.
    pub fn try_send(self) -> io::Result<Reply> {
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| io::Error::other("only http:// URLs"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut sock = TcpStream::connect(host)?;
        sock.set_read_timeout(Some(self.timeout))?;
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        sock.write_all(head.as_bytes())?;
        sock.write_all(&self.body)?;
        let mut raw = Vec::new();
        sock.read_to_end(&mut raw)?;
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> io::Result<Reply> {
    let eof = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "connection closed without a complete reply ({} bytes)",
                raw.len()
            ),
        )
    };
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(eof)?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(eof)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or_else(eof)?;
    } else if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
        if body.len() < n {
            return Err(eof());
        }
        body.truncate(n);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..nl])
            .ok()?
            .split(';')
            .next()?
            .trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// X-Consul-Index; panics when it is missing.
    #[track_caller]
    pub fn index(&self) -> u64 {
        self.header("x-consul-index")
            .unwrap_or_else(|| panic!("no X-Consul-Index: {self:?}"))
            .parse()
            .expect("numeric X-Consul-Index")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// The body of a KV read as entries.
    #[track_caller]
    pub fn entries(&self) -> Vec<Entry> {
        let v = self.json();
        let arr = v.as_array().expect("a JSON array");
        arr.iter()
            .map(|e| Entry {
                key: e["Key"].as_str().unwrap().to_string(),
                value: e["Value"].as_str().map(|s| {
                    base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .expect("base64 Value")
                }),
                flags: e["Flags"].as_u64().unwrap(),
                create_index: e["CreateIndex"].as_u64().unwrap(),
                modify_index: e["ModifyIndex"].as_u64().unwrap(),
                lock_index: e["LockIndex"].as_u64().unwrap(),
                session: e["Session"].as_str().map(str::to_string),
            })
            .collect()
    }

    /// The body of a `?keys` read.
    #[track_caller]
    pub fn keys(&self) -> Vec<String> {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not a JSON list of keys ({e}): {:?}", self.text()))
    }
}
