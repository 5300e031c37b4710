//! Key ranges: etcd names "every key under a prefix" as a half-open range
//! `[key, range_end)`, which the gateway takes base64-encoded.

/// The end of the range holding every key that starts with `prefix`.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): to the end of the
    // key space.
    vec![0]
}

/// The range `[key, end)` of every key under `prefix`; the whole key space
/// for an empty prefix (etcd refuses an empty key, and `\0` to `\0` means
/// everything).
pub(super) fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (
            prefix.as_bytes().to_vec(),
            prefix_range_end(prefix.as_bytes()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_increments_the_last_byte() {
        assert_eq!(prefix_range_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b""), vec![0]);
    }
}
