//! The per-direction link description and its compact text form,
//! `rate=50mbit,delay=300ms,loss=0.1%,...`, so one command line flag
//! describes one direction.

/// Gilbert-Elliott two-state loss: bursts come from the bad state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Per-frame chance of moving good -> bad.
    pub p_good_to_bad: f64,
    /// Per-frame chance of moving bad -> good (1 / mean burst length).
    pub p_bad_to_good: f64,
    pub loss_bad: f64,
    pub loss_good: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    /// Bits per second; 0 means no serialization delay.
    pub rate_bps: u64,
    pub delay_ns: u64,
    /// Uniform in [-jitter, +jitter]; frames are never reordered.
    pub jitter_ns: u64,
    /// Independent (Bernoulli) per-frame loss probability.
    pub loss: f64,
    pub gilbert: Option<GilbertElliott>,
    /// Drop-tail limit on bytes waiting for serialization.
    pub limit_bytes: u64,
    /// Scheduled events repeat every `period_ns` (0 = none): the extra
    /// delay toggles between 0 and `step_ns`, and the link is down
    /// for `outage_ns` at each boundary.
    pub period_ns: u64,
    pub step_ns: u64,
    pub outage_ns: u64,
}

pub const DEFAULT_LIMIT: u64 = 1 << 20;

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            rate_bps: 0,
            delay_ns: 0,
            jitter_ns: 0,
            loss: 0.0,
            gilbert: None,
            limit_bytes: DEFAULT_LIMIT,
            period_ns: 0,
            step_ns: 0,
            outage_ns: 0,
        }
    }
}

impl Spec {
    pub fn parse(text: &str) -> Result<Spec, String> {
        let mut spec = Spec::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}`: expected key=value"))?;
            let bad = |e: String| format!("{key}: {e}");
            match key {
                "rate" => spec.rate_bps = parse_rate(value).map_err(bad)?,
                "delay" => spec.delay_ns = parse_time(value).map_err(bad)?,
                "jitter" => spec.jitter_ns = parse_time(value).map_err(bad)?,
                "loss" => spec.loss = parse_probability(value).map_err(bad)?,
                "ge" => spec.gilbert = Some(parse_gilbert(value).map_err(bad)?),
                "limit" => spec.limit_bytes = parse_bytes(value).map_err(bad)?,
                "period" => spec.period_ns = parse_time(value).map_err(bad)?,
                "step" => spec.step_ns = parse_time(value).map_err(bad)?,
                "outage" => spec.outage_ns = parse_time(value).map_err(bad)?,
                _ => return Err(format!("unknown key `{key}`")),
            }
        }
        if spec.outage_ns > 0 && spec.outage_ns >= spec.period_ns {
            return Err("outage needs a longer period".into());
        }
        Ok(spec)
    }
}

/// Splits `12.5ms` into (12.5, "ms").
fn number_and_unit(text: &str) -> Result<(f64, String), String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{text}` must be a non-negative number"));
    }
    Ok((n, unit.to_ascii_lowercase()))
}

pub fn parse_rate(text: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(text)?;
    let scale = match unit.as_str() {
        "" | "bit" | "bps" => 1.0,
        "k" | "kbit" => 1e3,
        "m" | "mbit" => 1e6,
        "g" | "gbit" => 1e9,
        _ => {
            return Err(format!(
                "unknown rate unit `{unit}` (bit, kbit, mbit, gbit)"
            ));
        }
    };
    Ok((n * scale).round() as u64)
}

pub fn parse_time(text: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(text)?;
    let scale = match unit.as_str() {
        "ns" => 1.0,
        "us" => 1e3,
        "" | "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(format!("unknown time unit `{unit}` (ns, us, ms, s)")),
    };
    Ok((n * scale).round() as u64)
}

pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(text)?;
    let scale = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        _ => return Err(format!("unknown size unit `{unit}` (k, m)")),
    };
    Ok((n * scale).round() as u64)
}

/// `1%` or `0.01`.
pub fn parse_probability(text: &str) -> Result<f64, String> {
    let (n, unit) = number_and_unit(text)?;
    let p = match unit.as_str() {
        "%" => n / 100.0,
        "" => n,
        _ => return Err(format!("`{text}`: write a fraction or a percentage")),
    };
    if p > 1.0 {
        return Err(format!("`{text}` is above 100%"));
    }
    Ok(p)
}

/// `p_gb/p_bg/loss_bad[/loss_good]`, e.g. `1%/25%/50%`.
fn parse_gilbert(text: &str) -> Result<GilbertElliott, String> {
    let parts: Vec<f64> = text
        .split('/')
        .map(parse_probability)
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [gb, bg, bad] => Ok(GilbertElliott {
            p_good_to_bad: gb,
            p_bad_to_good: bg,
            loss_bad: bad,
            loss_good: 0.0,
        }),
        [gb, bg, bad, good] => Ok(GilbertElliott {
            p_good_to_bad: gb,
            p_bad_to_good: bg,
            loss_bad: bad,
            loss_good: good,
        }),
        _ => Err("expected p_gb/p_bg/loss_bad[/loss_good]".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_spec() {
        let s = Spec::parse("rate=50mbit,delay=300ms,jitter=2.5ms,loss=0.1%,ge=1%/25%/50%,limit=256k,period=15s,step=60ms,outage=100ms")
            .unwrap();
        assert_eq!(s.rate_bps, 50_000_000);
        assert_eq!(s.delay_ns, 300_000_000);
        assert_eq!(s.jitter_ns, 2_500_000);
        assert!((s.loss - 0.001).abs() < 1e-12);
        assert_eq!(s.gilbert.unwrap().p_bad_to_good, 0.25);
        assert_eq!(s.limit_bytes, 256 * 1024);
        assert_eq!(
            (s.period_ns, s.step_ns, s.outage_ns),
            (15_000_000_000, 60_000_000, 100_000_000)
        );
    }

    #[test]
    fn rejects_nonsense() {
        assert!(Spec::parse("rate=fast").is_err());
        assert!(Spec::parse("loss=150%").is_err());
        assert!(Spec::parse("colour=blue").is_err());
        assert!(Spec::parse("outage=1s").is_err());
        assert_eq!(Spec::parse("").unwrap(), Spec::default());
    }
}
