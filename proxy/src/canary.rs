//! The canary split: which side, upstream or fallback, serves a request.
//!
//! A sticky key is hashed to a bucket in `0..10000` with a stable hash (FNV-1a 64 over the
//! key's bytes, then the MurmurHash3 64-bit finalizer, modulo 10000). The key goes to the
//! upstream exactly when `bucket < percent * 100`. The hash depends on nothing but the key, so
//! every proxy instance, every restart and every route agree on it; and because the threshold
//! only grows with the percent, raising it only ever moves keys from the fallback to the
//! upstream.

use http::HeaderMap;

use crate::config::Sticky;

/// Number of buckets: a percent has two decimals of resolution.
pub const BUCKETS: u32 = 10_000;

/// The stable bucket of a sticky key.
pub fn bucket(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV alone leaves sequential keys (user-1, user-2...) in nearby buckets; the finalizer
    // spreads them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % u64::from(BUCKETS)) as u32
}

/// Reads the sticky key from a request, if it carries one.
pub fn sticky_key<'h>(sticky: &Sticky, headers: &'h HeaderMap) -> Option<&'h [u8]> {
    match sticky {
        Sticky::Header(name) => headers
            .get(name)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty()),
        Sticky::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|v| cookie(v.as_bytes(), name.as_bytes())),
    }
}

fn cookie<'v>(header: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = (&pair[..eq], &pair[eq + 1..]);
        (k.trim_ascii() == name && !v.is_empty()).then_some(v.trim_ascii())
    })
}

/// Whether a request goes to the upstream, given the route's share in basis points and the
/// request's sticky key. Without a key the split is random in the same proportion.
pub fn to_upstream(share_bp: u32, key: Option<&[u8]>) -> bool {
    let b = match key {
        Some(k) => bucket(k),
        None => fastrand::u32(0..BUCKETS),
    };
    b < share_bp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_stable() {
        // Pinned values: changing the hash would move every user's cohort.
        assert_eq!(bucket(b"user-1"), bucket(b"user-1"));
        let pinned = [bucket(b""), bucket(b"user-1"), bucket(b"alice")];
        assert_eq!(pinned, [PINNED_EMPTY, PINNED_USER1, PINNED_ALICE]);
    }

    const PINNED_EMPTY: u32 = 4342;
    const PINNED_USER1: u32 = 5477;
    const PINNED_ALICE: u32 = 7236;

    #[test]
    fn share_is_fair_over_sequential_keys() {
        let n = 20_000;
        let hits = (0..n)
            .filter(|i| bucket(format!("user-{i}").as_bytes()) < 3000)
            .count();
        let share = hits as f64 / n as f64;
        assert!((share - 0.30).abs() < 0.015, "share {share}");
    }

    #[test]
    fn raising_the_share_only_moves_keys_to_the_upstream() {
        for i in 0..2000 {
            let key = format!("k{i}");
            if to_upstream(1000, Some(key.as_bytes())) {
                assert!(to_upstream(2500, Some(key.as_bytes())));
            }
        }
    }

    #[test]
    fn extremes() {
        assert!(!to_upstream(0, Some(b"x")));
        assert!(to_upstream(10_000, Some(b"x")));
        assert!(!to_upstream(0, None));
        assert!(to_upstream(10_000, None));
    }

    #[test]
    fn cookie_keys() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; uid=abc ; b=2".parse().unwrap());
        assert_eq!(
            sticky_key(&Sticky::Cookie("uid".into()), &h),
            Some(&b"abc"[..])
        );
        assert_eq!(sticky_key(&Sticky::Cookie("zz".into()), &h), None);
    }
}
