//! Values of single options: numbers, sizes, rates, durations, names and
//! targets, each checked and turned into what the model holds. Every
//! error names the option it came with.

use std::net::IpAddr;
use std::time::Duration;

use super::model::{ConfigError, Target, err};

pub(super) fn parse_level(s: &str) -> Result<log::LevelFilter, ConfigError> {
    match s {
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => err(format!(
            "--log-level: '{s}' is not error, warn, info or debug"
        )),
    }
}

pub(super) fn parse_num(flag: &str, s: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n = if let Some(hex) = s.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        s.parse::<u64>()
    };
    match n {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => err(format!("{flag}: {s} is out of range {min}-{max}")),
        Err(_) => err(format!("{flag}: '{s}' is not a number")),
    }
}

/// Sizes accept a k or m suffix (powers of 1024), as UCI users write them.
pub(super) fn parse_size(flag: &str, s: &str, min: u64, max: u64) -> Result<u32, ConfigError> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1024),
        Some(b'm') => (&lower[..lower.len() - 1], 1024 * 1024),
        _ => (lower.as_str(), 1),
    };
    let n = match digits.parse::<u64>() {
        Ok(n) => n.saturating_mul(unit),
        Err(_) => return err(format!("{flag}: '{s}' is not a size (e.g. 65536, 64k, 1m)")),
    };
    if !(min..=max).contains(&n) {
        return err(format!("{flag}: {s} is out of range {min}-{max} bytes"));
    }
    Ok(n as u32)
}

/// A rate as SQM and tc write it: 850kbit, 10mbit, 1.5gbit (powers of
/// 1000, bits per second).
pub fn parse_rate(flag: &str, s: &str) -> Result<u64, ConfigError> {
    let lower = s.to_ascii_lowercase();
    let units = [
        ("gbit", 1_000_000_000),
        ("mbit", 1_000_000),
        ("kbit", 1_000),
        ("bit", 1),
    ];
    let Some((digits, scale)) = units
        .iter()
        .find_map(|(u, scale)| lower.strip_suffix(u).map(|d| (d, *scale)))
    else {
        let hint = if lower.ends_with("bps") {
            " (tc's bps means bytes per second; write bits, e.g. 80mbit for 10mbps)"
        } else {
            ""
        };
        return err(format!(
            "{flag}: '{s}' needs a unit: bit, kbit, mbit or gbit, e.g. 10mbit{hint}"
        ));
    };
    let Some(bps) = parse_decimal(digits, scale) else {
        return err(format!(
            "{flag}: '{s}' is not a rate like 10mbit or 850kbit"
        ));
    };
    if !(8_000..=100_000_000_000).contains(&bps) {
        return err(format!("{flag}: {s} is out of range 8kbit-100gbit"));
    }
    Ok(bps)
}

/// A duration with its unit: 600ms, 0.6s, 800us.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    let lower = s.to_ascii_lowercase();
    let units = [("ms", 1_000), ("us", 1), ("s", 1_000_000)];
    let Some((digits, scale)) = units
        .iter()
        .find_map(|(u, scale)| lower.strip_suffix(u).map(|d| (d, *scale)))
    else {
        return err(format!(
            "{flag}: '{s}' needs a unit: ms or s, e.g. 600ms or 0.6s"
        ));
    };
    let Some(us) = parse_decimal(digits, scale) else {
        return err(format!("{flag}: '{s}' is not a duration like 600ms"));
    };
    if !(1_000..=10_000_000).contains(&us) {
        return err(format!("{flag}: {s} is out of range 1ms-10s"));
    }
    Ok(Duration::from_micros(us))
}

/// `digits` (like 2.5) times `scale`, rounded; no floating point, which
/// would pull the float parser into a router binary that has a size
/// budget.
fn parse_decimal(digits: &str, scale: u64) -> Option<u64> {
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || frac.len() > 9 {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let frac_value: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let frac_scale = 10u64.pow(frac.len() as u32);
    let whole = int.checked_mul(scale)?;
    // Below 10^9 times a scale of at most 10^9: no overflow (and no
    // 128-bit division, which costs 2 KB on 32-bit MIPS).
    debug_assert!(scale <= 1_000_000_000);
    let part = (frac_value * scale + frac_scale / 2) / frac_scale;
    whole.checked_add(part)
}

pub(super) fn parse_secs(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(parse_num(flag, s, 1, 86400)?))
}

/// Routing tables 253-255 (default, main, local) are the kernel's own: the
/// rules flush pepwrt's table, which must never be one of them.
pub(super) fn parse_table(s: &str) -> Result<u32, ConfigError> {
    let t = parse_num("--table", s, 1, 0xffff_fffe)? as u32;
    if (253..=255).contains(&t) {
        return err(format!(
            "--table: {t} is a table the kernel uses itself; choose another, e.g. 313"
        ));
    }
    Ok(t)
}

pub(super) fn parse_mark(s: &str) -> Result<u32, ConfigError> {
    let m = parse_num("--mark", s, 1, 0xffff_ffff)? as u32;
    if !m.is_power_of_two() {
        return err(format!("--mark: {s} must be a single bit, e.g. 0x10000"));
    }
    Ok(m)
}

pub(super) fn parse_cc(flag: &str, s: &str) -> Result<String, ConfigError> {
    // TCP_CONGESTION names are at most 16 bytes including the NUL.
    let ok =
        !s.is_empty() && s.len() < 16 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return err(format!("{flag}: '{s}' is not a congestion control name"));
    }
    Ok(s.to_string())
}

/// An interface name or a CIDR subnet.
pub fn parse_target(flag: &str, s: &str) -> Result<Target, ConfigError> {
    if let Some((addr, len)) = s.split_once('/') {
        let addr: IpAddr = match addr.parse() {
            Ok(a) => a,
            Err(_) => return err(format!("{flag}: '{s}' is not a subnet like 198.18.0.0/24")),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = parse_num(flag, len, 0, max)? as u8;
        return Ok(Target::Subnet(addr, len));
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(Target::Subnet(addr, if addr.is_ipv4() { 32 } else { 128 }));
    }
    // IFNAMSIZ is 16 including the NUL; these characters are what Linux
    // and OpenWrt interface names use, and what is safe in a rule.
    let ok = !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !ok {
        return err(format!(
            "{flag}: '{s}' is neither an interface name nor a subnet"
        ));
    }
    Ok(Target::Interface(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_interfaces_or_subnets() {
        assert_eq!(
            parse_target("x", "br-lan").unwrap(),
            Target::Interface("br-lan".into())
        );
        assert_eq!(
            parse_target("x", "198.18.0.0/24").unwrap(),
            Target::Subnet("198.18.0.0".parse().unwrap(), 24)
        );
        assert!(parse_target("x", "fd00::/129").is_err());
        assert!(parse_target("x", "eth0; rm -rf /").is_err());
    }

    #[test]
    fn rates_and_durations_take_sqm_units() {
        assert_eq!(parse_rate("x", "10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("x", "850kbit"), Ok(850_000));
        assert_eq!(parse_rate("x", "1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("x", "2.5mbit"), Ok(2_500_000));
        assert_eq!(parse_duration("x", "600ms"), Ok(Duration::from_millis(600)));
        assert_eq!(parse_duration("x", "0.6s"), Ok(Duration::from_millis(600)));
        assert_eq!(
            parse_duration("x", "2500us"),
            Ok(Duration::from_micros(2500))
        );
        for bad in [".5mbit", "1e3mbit", "-1mbit", "1..2mbit", "1.2.3mbit"] {
            let e = parse_rate("--uplink", bad).unwrap_err().to_string();
            assert!(
                e.contains("is not a rate") || e.contains("out of range"),
                "{bad}: {e}"
            );
        }
        for (bad, needle) in [
            ("10", "needs a unit"),
            ("10mbps", "bytes per second"),
            ("fastmbit", "is not a rate"),
            ("1kbit", "out of range"),
            ("200gbit", "out of range"),
        ] {
            let e = parse_rate("--uplink", bad).unwrap_err().to_string();
            assert!(e.contains("--uplink") && e.contains(needle), "{bad}: {e}");
        }
        for (bad, needle) in [("600", "needs a unit"), ("11s", "out of range")] {
            let e = parse_duration("--rtt", bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_sizes_and_marks_have_their_limits() {
        assert_eq!(parse_num("--queue", "0x10", 0, 65535), Ok(16));
        assert!(parse_num("--queue", "65536", 0, 65535).is_err());
        assert_eq!(parse_size("--buffer", "64k", 4096, 1 << 20), Ok(65536));
        assert_eq!(parse_size("--buffer", "1M", 4096, 1 << 20), Ok(1 << 20));
        assert!(parse_size("--buffer", "2m", 4096, 1 << 20).is_err());
        assert!(parse_table("254").is_err());
        assert_eq!(parse_mark("0x10000"), Ok(0x10000));
        assert_eq!(parse_level("warning"), Ok(log::LevelFilter::Warn));
    }
}
