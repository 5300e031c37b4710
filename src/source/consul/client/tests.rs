//! Unit tests of the client: addresses, key encoding, the token's secrecy.

use super::*;

fn client(config: &ConsulConfig) -> ConsulClient {
    ConsulClient::new(config).unwrap()
}

#[test]
fn addresses_get_a_scheme_and_lose_the_slash() {
    let address = |a: &str| normalize_address(a).map(|(a, _)| a);
    assert_eq!(address("127.0.0.1:8500").unwrap(), "http://127.0.0.1:8500");
    assert_eq!(
        address("https://consul:8501/").unwrap(),
        "https://consul:8501"
    );
    assert!(address("unix:///tmp/consul.sock").is_err());
    assert!(address("ftp://x").is_err());
    assert!(address("").is_err());
}

#[test]
fn keys_are_percent_encoded_segment_by_segment() {
    let c = client(&ConsulConfig::new("127.0.0.1:8500"));
    let url = c.kv_url("a b/c?d#e%f+g/", false, None, false).unwrap();
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:8500/v1/kv/a%20b/c%3Fd%23e%25f%2Bg/"
    );
    // Tabs and line breaks are escaped, not dropped as the URL
    // standard drops them from unescaped input.
    let url = c.kv_url("tab\there/new\nline", false, None, false).unwrap();
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:8500/v1/kv/tab%09here/new%0Aline"
    );
    // The root folder, with every query parameter.
    let mut config = ConsulConfig::new("https://consul:8501/base/");
    config.datacenter = Some("eu 1/a".into());
    config.stale = true;
    let url = client(&config)
        .kv_url("", true, Some((42, Duration::from_secs(60))), true)
        .unwrap();
    assert_eq!(
        url.as_str(),
        "https://consul:8501/base/v1/kv/?recurse&dc=eu+1%2Fa&stale&index=42&wait=60000ms"
    );
}

#[test]
fn keys_a_url_cannot_carry_are_refused() {
    let c = client(&ConsulConfig::new("127.0.0.1:8500"));
    for key in ["a/../b", "./a", "a/."] {
        let err = c.kv_url(key, false, None, false).unwrap_err().to_string();
        assert!(err.contains(&format!("{key:?}")), "{err}");
    }
    assert!(c.kv_url("a/.b/..c/...", false, None, false).is_ok());
}

#[test]
fn the_token_is_not_in_debug_output() {
    let mut config = ConsulConfig::new("127.0.0.1:8500");
    config.token = Some("s3cr3t-t0ken".into());
    assert!(!format!("{config:?}").contains("s3cr3t"));
    assert!(!format!("{:?}", client(&config)).contains("s3cr3t"));
}
