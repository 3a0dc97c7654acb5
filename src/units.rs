//! Durations and sizes as people write them, for flags and the release manifest alike.

/// A duration in Go's forms, as ore's flags take them (`time.ParseDuration`): one or more
/// number-and-unit pairs, `1h30m`, `1.5h`, `500ms`, `5h0m0s`; units ns, us (µs), ms, s, m, h,
/// and imgpub's d. A bare number is refused (is `90` seconds or days?), except `0`, as Go.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    const FORMS: &str = "give a number with a unit, or several: 90m, 1h30m, 1.5h, 600s, 2d";
    let bad = || format!("{s:?} is not a duration; {FORMS}");
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if t.starts_with('-') {
        return Err(format!("{s:?} is negative; {FORMS}"));
    }
    if t.is_empty() {
        return Err(bad());
    }
    let digits = |r: &str| r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
    let too_long = || format!("{s:?} is too long a duration");
    let mut nanos: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(r) => r.split_at(digits(r)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err(format!("{s:?} has a number without a unit; {FORMS}")),
            _ => return Err(format!("{s:?} has an unknown unit {unit:?}; {FORMS}")),
        };
        let whole: u128 = match whole {
            "" => 0,
            w => w.parse().map_err(|_| too_long())?,
        };
        // The fraction to nanosecond precision at most: 18 digits are more than that.
        let fraction = &fraction[..fraction.len().min(18)];
        let part = match fraction {
            "" => 0,
            f => f.parse::<u128>().map_err(|_| bad())? * per / 10u128.pow(f.len() as u32),
        };
        nanos = whole
            .checked_mul(per)
            .and_then(|n| n.checked_add(part))
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(too_long)?;
        rest = after;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    Ok(std::time::Duration::new(
        secs,
        (nanos % 1_000_000_000) as u32,
    ))
}

/// `16MiB`, `16M`, `1GiB`, `512KiB`: a number with its unit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 16MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        // A bare number could mean bytes or MiB: refused, as a bare duration is.
        "" => return Err(format!("{s:?} has no unit; give one: 16MiB, 512KiB, 1GiB")),
        "m" | "mb" | "mib" => 1 << 20,
        "k" | "kb" | "kib" => 1 << 10,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?} has an unknown unit; use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is larger than any file"))
}

/// `d` as the duration flags take it (`5h`, `1h30m`, `90s`), to the second.
pub(crate) fn show_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_duration_shown_reads_back_as_itself() {
        for secs in [0, 1, 59, 60, 61, 3600, 5400, 7200, 3 * 86400 + 1] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&show_duration(d)), Ok(d), "{secs}");
        }
        assert_eq!(show_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(show_duration(Duration::from_secs(600)), "10m");
    }
}
