//! A `Duration` in whole milliseconds or microseconds as a `u64`.
//!
//! `Duration::as_millis` and `as_micros` return `u128`: formatting one, or
//! dividing it, pulls 128-bit division and printing into the binary (about
//! 4 KB on 32-bit MIPS). These give the same value for any duration under
//! half a million years.

use std::time::Duration;

/// Whole milliseconds, as `Duration::as_millis`.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_secs() * 1000 + u64::from(d.subsec_millis())
}

/// Whole microseconds, as `Duration::as_micros`.
pub(crate) fn micros(d: Duration) -> u64 {
    d.as_secs() * 1_000_000 + u64::from(d.subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_std() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(999_999),
            Duration::from_micros(612_345),
            Duration::from_millis(600),
            Duration::new(86_400, 999_999_999),
            Duration::new(10_000_000_000, 1),
        ] {
            assert_eq!(u128::from(millis(d)), d.as_millis(), "{d:?}");
            assert_eq!(u128::from(micros(d)), d.as_micros(), "{d:?}");
        }
    }
}
