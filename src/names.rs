//! Fixed sets of values that flags name (`--arch`, `--boot-mode`, `--preflight`, …): each
//! value with its name and the other spellings it is known by. The command line builds
//! its parsers from these tables, so the library needs no command-line crate.

/// An enum whose values have names.
pub trait Named: Copy + PartialEq + Send + Sync + 'static {
    /// Every value: (value, name, other accepted spellings).
    const NAMES: &'static [(Self, &'static str, &'static [&'static str])];

    /// The value's name.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(v, ..)| *v == self)
            .map_or("", |(_, name, _)| name)
    }

    /// The value `s` names (by its name or another spelling), in any case.
    fn from_name(s: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, name, aliases)| {
                name.eq_ignore_ascii_case(s) || aliases.iter().any(|a| a.eq_ignore_ascii_case(s))
            })
            .map(|(v, ..)| *v)
    }
}
