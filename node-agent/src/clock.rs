//! The agent's clock: CLOCK_REALTIME, optionally skewed for tests.
//!
//! `--clock-skew +750ms,100ppm` makes the agent behave like a host whose clock is 750 ms ahead and
//! runs 100 ppm fast: every timestamp it produces (events, probe replies) goes through [`skewed`].
//! The coordinator is not told; tests check that it recovers the skew from probes alone.

use crate::error::AgentError;
use std::sync::OnceLock;

/// A fixed offset plus a rate error, relative to the moment the agent started.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Skew {
    pub offset_ns: i64,
    pub ppm: f64,
    /// True (unskewed) time the drift is measured from.
    pub origin_ns: i64,
}

static SKEW: OnceLock<Skew> = OnceLock::new();

/// Parses `+750ms,100ppm`, `-300ms`, `0,-50ppm`, `+2s`, `1500us`.
pub fn parse_skew(text: &str) -> Result<(i64, f64), AgentError> {
    let mut parts = text.split(',');
    let offset = parts.next().unwrap_or("").trim();
    let offset_ns = parse_duration_ns(offset).ok_or_else(|| {
        AgentError::BadInput(format!("--clock-skew: `{offset}` is not an offset like +750ms, -300ms, 2s, 1500us, 0"))
    })?;
    let ppm = match parts.next().map(str::trim) {
        None => 0.0,
        Some(p) => p
            .strip_suffix("ppm")
            .and_then(|v| v.trim_start_matches('+').parse::<f64>().ok())
            .filter(|v| v.abs() < 10_000.0)
            .ok_or_else(|| AgentError::BadInput(format!("--clock-skew: `{p}` is not a drift like 100ppm or -50ppm")))?,
    };
    if parts.next().is_some() {
        return Err(AgentError::BadInput("--clock-skew takes OFFSET[,DRIFTppm]".into()));
    }
    Ok((offset_ns, ppm))
}

fn parse_duration_ns(text: &str) -> Option<i64> {
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let split = body.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(body.len());
    let value: f64 = body[..split].parse().ok()?;
    let scale = match &body[split..] {
        "" if value == 0.0 => 1.0,
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(sign * (value * scale).round() as i64)
}

/// Installs the skew for this process (once, at start-up) and returns it.
pub fn install(offset_ns: i64, ppm: f64) -> Skew {
    let skew = Skew { offset_ns, ppm, origin_ns: true_now_ns() };
    let _ = SKEW.set(skew);
    skew
}

fn true_now_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The host clock reading for true time `true_ns` (identity without a skew).
pub fn skewed(true_ns: i64) -> i64 {
    match SKEW.get() {
        None => true_ns,
        Some(s) => true_ns + s.offset_ns + ((true_ns - s.origin_ns) as f64 * s.ppm * 1e-6).round() as i64,
    }
}

/// The host clock now.
pub fn now_ns() -> i64 {
    skewed(true_now_ns())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_drifts() {
        let cases = [
            ("+750ms,100ppm", (750_000_000, 100.0)),
            ("-300ms", (-300_000_000, 0.0)),
            ("0,-50ppm", (0, -50.0)),
            ("2s", (2_000_000_000, 0.0)),
            ("1500us", (1_500_000, 0.0)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_skew(text).unwrap(), expected, "{text}");
        }
        assert!(parse_skew("750").unwrap_err().to_string().contains("not an offset"));
        assert!(parse_skew("1ms,fast").unwrap_err().to_string().contains("not a drift"));
        assert!(parse_skew("1ms,1ppm,2").is_err());
    }
}
