//! Durations as sojourn's flags and configuration file write them, the
//! way Prometheus does (`500ms`, `5s`, `1m`, `1h`): one parser, so a
//! setting means the same on the command line and in the file.

use std::time::Duration;

/// Durations as Prometheus writes them: `500ms`, `5s`, `1m`, `1h`.
/// [`parse_duration`] that also takes zero (`0`, `0s`), meaning "every time".
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    match s.strip_suffix("ms").or_else(|| s.strip_suffix('s')) {
        _ if s == "0" => Ok(Duration::ZERO),
        Some(n) if n.parse::<f64>() == Ok(0.0) => Ok(Duration::ZERO),
        _ => parse_duration(s),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("{s:?} has no unit (use ms, s, m or h)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?} must be positive"));
    }
    if secs < MIN_DURATION.as_secs_f64() {
        return Err(format!(
            "{s:?} is shorter than the least sojourn takes, 1ms"
        ));
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "{s:?} is longer than the most sojourn takes, 8760h (a year)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The shortest duration any setting takes: below it a timer would round
/// to zero.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest duration any setting takes: a year is "never" for every
/// timeout and interval sojourn has, and anything longer would overflow
/// the clock's arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
