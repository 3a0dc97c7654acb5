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

/// `16MiB`, `16M`, `1GiB`, `512KiB` (the library's parser, which the manifest uses too).
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    imgpub::parse_size(s)
}

/// A duration in Go's forms (the library's parser, which the manifest uses too).
pub(super) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    imgpub::parse_duration(s)
}
