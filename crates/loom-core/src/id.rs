//! Identifiers: a prefix and a time-ordered, 26-character Crockford base32 body (ULID layout).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static LAST: Mutex<u128> = Mutex::new(0);

/// A new identifier such as `run_01JC7Z3V9X4T6Q8R2M5N7P9K3B`: the prefix, an underscore, then 48 bits
/// of milliseconds and 80 random bits in Crockford base32, so ids sort by creation time.
pub fn new_id(prefix: &str) -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let candidate: u128 = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80)
        | (u128::from(fastrand::u64(..)) << 16)
        | u128::from(fastrand::u16(..));
    // Monotonic across the process: an id made later always sorts after an earlier one, even
    // within the same millisecond (the random part then counts up from the last id).
    let value = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let v = if candidate > *last { candidate } else { last.saturating_add(1) };
        *last = v;
        v
    };
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        let idx = ((value >> (i * 5)) & 0x1F) as usize;
        out.push(ALPHABET[idx] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_prefixed_and_sorted_by_time() {
        let a = new_id("run");
        assert!(a.starts_with("run_"));
        assert_eq!(a.len(), 30);
        let mut seen = std::collections::HashSet::new();
        let mut prev = String::new();
        for _ in 0..10_000 {
            let id = new_id("x");
            assert!(id > prev, "ids must increase: {prev} then {id}");
            assert!(seen.insert(id.clone()));
            prev = id;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("run");
        assert!(b > a);
    }
}
