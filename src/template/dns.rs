//! confd's `lookupIP`, `lookupIPV4` and `lookupIPV6`: the host's resolver
//! (getaddrinfo: /etc/hosts, then DNS), as Go's net.LookupIP uses it.
//! confd's `lookupSRV` is not here: the standard library has no SRV
//! query, and a DNS client crate is much bigger than one function.

use std::net::{IpAddr, ToSocketAddrs};

use minijinja::Environment;

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function("lookupIP", |name: String| lookup(&name, |_| true));
    env.add_function("lookupIPV4", |name: String| {
        lookup(&name, |ip| ip.contains('.'))
    });
    env.add_function("lookupIPV6", |name: String| {
        lookup(&name, |ip| ip.contains(':'))
    });
}

/// The addresses of `name` as strings, sorted as strings (confd's
/// `sort.Strings`), those `keep` accepts. A name that does not resolve
/// is an empty list, never an error, as in confd: a template must then
/// handle the empty case, not fail the render.
fn lookup(name: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(addrs) = (name, 0).to_socket_addrs() else {
        return Vec::new();
    };
    let mut ips: Vec<String> = addrs
        .map(|a| match a.ip() {
            // An IPv4-mapped address prints as Go prints it: dotted.
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
            IpAddr::V4(v4) => v4.to_string(),
        })
        .filter(|ip| keep(ip))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_and_literals_resolve_and_bad_names_are_empty() {
        assert_eq!(lookup("localhost", |ip| ip.contains('.')), ["127.0.0.1"]);
        assert_eq!(lookup("10.0.0.1", |_| true), ["10.0.0.1"]);
        assert_eq!(lookup("::1", |_| true), ["::1"]);
        assert!(lookup("", |_| true).is_empty());
    }
}
