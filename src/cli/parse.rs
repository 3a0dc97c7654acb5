//! The values flags take: names from a fixed set, sizes and durations with their units.

use super::*;

/// A parser for the values of `T`, by name or another spelling; `--help` and the shell
/// completions list them.
pub(super) fn named<T: Named + Clone>() -> impl clap::builder::TypedValueParser<Value = T> {
    let values = T::NAMES
        .iter()
        .map(|(_, name, aliases)| PossibleValue::new(*name).aliases(aliases.iter().copied()));
    PossibleValuesParser::new(values).try_map(|s| T::from_name(&s).ok_or("not one of its values"))
}

/// `16MiB`, `16M`, `1GiB`, `512KiB`: a number with its unit.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
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

/// A duration in Go's forms (the library's parser, which the manifest uses too).
pub(super) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    imgpub::parse_duration(s)
}
