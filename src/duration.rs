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

/// Prints a `Duration` as `{:?}` does (`60ms`, `1.5s`, `812.5µs`, `None`
/// and `Some(..)` for an `Option`), from its integer parts: std's
/// `Debug` handles widths, precision and rounding that the logs never
/// ask for, and costs about 2 KB on MIPS.
pub(crate) struct LikeDebug<T>(pub T);

impl std::fmt::Display for LikeDebug<Duration> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (secs, nanos) = (self.0.as_secs(), self.0.subsec_nanos());
        let (int, frac, width, unit) = if secs > 0 {
            (secs, nanos, 9, "s")
        } else if nanos >= 1_000_000 {
            (u64::from(nanos / 1_000_000), nanos % 1_000_000, 6, "ms")
        } else if nanos >= 1_000 {
            (u64::from(nanos / 1_000), nanos % 1_000, 3, "µs")
        } else {
            (u64::from(nanos), 0, 0, "ns")
        };
        write!(f, "{int}")?;
        if frac > 0 {
            // The fraction's digits, without the zeros that end it.
            let (mut frac, mut width) = (frac, width);
            while frac % 10 == 0 {
                frac /= 10;
                width -= 1;
            }
            write!(f, ".{frac:0width$}")?;
        }
        f.write_str(unit)
    }
}

impl std::fmt::Display for LikeDebug<Option<Duration>> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, "Some({})", LikeDebug(d)),
            None => f.write_str("None"),
        }
    }
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

    #[test]
    fn debug_prints_as_std() {
        let mut cases = vec![Duration::ZERO, Duration::MAX];
        for secs in [0, 1, 59, 86_400, u64::MAX / 3] {
            for nanos in [
                0,
                1,
                9,
                10,
                999,
                1_000,
                1_001,
                1_500,
                999_999,
                1_000_000,
                1_000_010,
                5_000_000,
                60_000_000,
                123_456_789,
                500_000_000,
                999_999_999,
            ] {
                cases.push(Duration::new(secs, nanos));
            }
        }
        for d in cases {
            assert_eq!(LikeDebug(d).to_string(), format!("{d:?}"));
            assert_eq!(LikeDebug(Some(d)).to_string(), format!("{:?}", Some(d)));
        }
        assert_eq!(LikeDebug(None::<Duration>).to_string(), "None");
    }
}
