//! oslo.config's value types, applied to the strings the INI reader keeps.
//!
//! figment does no type coercion (`"True"` is not a `bool` to it), so conversion is done
//! here, deliberately, with oslo's exact rules (`oslo_config/types.py`).

use std::collections::BTreeMap;

/// Why a string is not a valid value of an oslo type. The caller adds file, line, section
/// and option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not one of oslo's boolean words.
    #[error("`{0}` is not a boolean (expected true/false, yes/no, on/off or 1/0, any case)")]
    Bool(String),
    /// Not a base-10 integer.
    #[error("`{0}` is not an integer")]
    Int(String),
    /// An integer outside the option's range.
    #[error("{value} is out of range {min}..={max}")]
    OutOfRange {
        /// The value read.
        value: i64,
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A dict item without `:`.
    #[error("`{0}` is not a NAME:VALUE pair")]
    DictPair(String),
    /// A dict item with an empty name.
    #[error("dict key names cannot be empty")]
    DictEmptyKey,
    /// The same dict key twice.
    #[error("duplicate dict key `{0}`")]
    DictDuplicateKey(String),
    /// A port range that is not `N` or `N-M` with 1 <= N <= M <= 65535.
    #[error(
        "`{0}` is not a port or port range (expected e.g. `3306` or `4567-4568`, ports 1-65535)"
    )]
    PortRange(String),
    /// A choice outside the accepted set.
    #[error("`{value}` is not one of {choices}")]
    Choice {
        /// The value read.
        value: String,
        /// The accepted values.
        choices: &'static str,
    },
    /// A `$name` reference to an option that no source sets (the name is hidden in
    /// secret values, where it is likely part of a password: write `$$` for a `$`).
    #[error("{} refers to an option that no configuration source sets (write `$$` for a literal `$`)", reference_name(.0))]
    UnresolvedReference(Option<String>),
    /// `$name` references that refer to each other.
    #[error("{} is part of a loop of `$` references", reference_name(.0))]
    ReferenceLoop(Option<String>),
    /// A value that must be a CIDR.
    #[error("`{0}` is not a CIDR (e.g. 10.0.0.0/24)")]
    Cidr(String),
    /// A container name Docker and containerd would refuse.
    #[error(
        "`{0}` is not a container name (a letter or digit, then letters, digits, `_`, `.` or `-`)"
    )]
    ContainerName(String),
    /// An `ssl_version` oslo knows but that names an obsolete protocol rustls does not
    /// implement.
    #[error(
        "`{0}` is an obsolete protocol that rustls does not implement (TLS 1.0 and 1.1, SSL 2 \
         and 3): use TLSv1_2, or SSLv23 (or no value) to negotiate TLS 1.2 or 1.3"
    )]
    ObsoleteSslVersion(String),
    /// A list item that must be a registry `host[:port]`.
    #[error("`{0}` is not a registry host[:port] (no scheme, path or spaces)")]
    Registry(String),
}

fn reference_name(name: &Option<String>) -> String {
    match name {
        Some(name) => format!("`${name}`"),
        None => "a `$` reference in this secret value".to_owned(),
    }
}

/// `types.Boolean`: `true/1/on/yes` and `false/0/off/no`, case-insensitive, nothing else
/// (not even surrounding spaces, which the INI reader has already stripped).
pub fn parse_bool(text: &str) -> Result<bool, ValueError> {
    match text.to_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Ok(true),
        "false" | "0" | "off" | "no" => Ok(false),
        _ => Err(ValueError::Bool(text.to_owned())),
    }
}

/// `types.Integer`: Python `int()` of the stripped text; blank means "unset" (`None`).
pub fn parse_int(text: &str) -> Result<Option<i64>, ValueError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if digits.starts_with(['+', '-']) && digits.len() != trimmed.len() {
        return Err(ValueError::Int(text.to_owned()));
    }
    digits
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ValueError::Int(text.to_owned()))
}

/// [`parse_int`] limited to `min..=max` (oslo's `min`/`max` arguments).
pub fn parse_int_in(text: &str, min: i64, max: i64) -> Result<Option<i64>, ValueError> {
    match parse_int(text)? {
        Some(value) if !(min..=max).contains(&value) => {
            Err(ValueError::OutOfRange { value, min, max })
        }
        other => Ok(other),
    }
}

/// `types.List` of strings: strip, drop trailing commas, split on `,`, strip each item.
/// Inner empty items are kept, as oslo keeps them.
pub fn parse_list(text: &str) -> Vec<String> {
    let trimmed = text.trim().trim_end_matches(',');
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split(',')
        .map(|item| item.trim().to_owned())
        .collect()
}

/// `types.Dict` of strings: `k:v,k2:v2`; names and values stripped; empty or duplicate
/// names are errors.
pub fn parse_dict(text: &str) -> Result<BTreeMap<String, String>, ValueError> {
    let mut dict = BTreeMap::new();
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(dict);
    }
    for pair in trimmed.split(',') {
        let (key, value) = pair
            .split_once(':')
            .ok_or_else(|| ValueError::DictPair(pair.trim().to_owned()))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(ValueError::DictEmptyKey);
        }
        if dict
            .insert(key.to_owned(), value.trim().to_owned())
            .is_some()
        {
            return Err(ValueError::DictDuplicateKey(key.to_owned()));
        }
    }
    Ok(dict)
}

/// Trove's `tcp_ports` items (`types.Range(1, 65535)`): `N` or `N-M`, expanded to every
/// port, in order, duplicates removed.
pub fn expand_port_ranges(items: &[String]) -> Result<Vec<u16>, ValueError> {
    let mut ports: Vec<u16> = Vec::new();
    for item in items {
        let bad = || ValueError::PortRange(item.clone());
        let (start, end) = match item.split_once('-') {
            Some((start, end)) => (start.trim(), end.trim()),
            None => (item.trim(), item.trim()),
        };
        let start: u16 = start.parse().map_err(|_| bad())?;
        let end: u16 = end.parse().map_err(|_| bad())?;
        if start == 0 || start > end {
            return Err(bad());
        }
        for port in start..=end {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_oslo_words_in_any_case() {
        for word in ["true", "True", "TRUE", "1", "on", "On", "yes", "YES"] {
            assert_eq!(parse_bool(word), Ok(true), "{word}");
        }
        for word in ["false", "False", "0", "off", "OFF", "no", "No"] {
            assert_eq!(parse_bool(word), Ok(false), "{word}");
        }
        for word in ["", "2", "y", "enabled", "truee", " true"] {
            assert_eq!(
                parse_bool(word),
                Err(ValueError::Bool(word.to_owned())),
                "{word}"
            );
        }
    }

    #[test]
    fn integers_follow_python_int() {
        assert_eq!(parse_int("180"), Ok(Some(180)));
        assert_eq!(parse_int(" -5 "), Ok(Some(-5)));
        assert_eq!(parse_int("+7"), Ok(Some(7)));
        assert_eq!(parse_int("   "), Ok(None));
        assert_eq!(parse_int("1.5"), Err(ValueError::Int("1.5".to_owned())));
        assert_eq!(parse_int("+-1"), Err(ValueError::Int("+-1".to_owned())));
        assert_eq!(parse_int("ten"), Err(ValueError::Int("ten".to_owned())));
        assert_eq!(
            parse_int_in("0", 1, 10),
            Err(ValueError::OutOfRange {
                value: 0,
                min: 1,
                max: 10
            })
        );
    }

    #[test]
    fn lists_are_comma_separated_and_trimmed() {
        assert_eq!(parse_list(" a , b,c "), ["a", "b", "c"]);
        assert_eq!(parse_list("a,b,,"), ["a", "b"]);
        assert_eq!(parse_list("a,,b"), ["a", "", "b"]);
        assert!(parse_list("  ").is_empty());
        assert!(parse_list(",").is_empty());
    }

    #[test]
    fn dicts_are_name_colon_value_pairs() {
        let dict = parse_dict("a:1, b : x:y ,c:").expect("valid dict");
        assert_eq!(dict.get("a").map(String::as_str), Some("1"));
        assert_eq!(dict.get("b").map(String::as_str), Some("x:y"));
        assert_eq!(dict.get("c").map(String::as_str), Some(""));
        assert!(parse_dict("").expect("empty dict").is_empty());
        assert_eq!(parse_dict("a"), Err(ValueError::DictPair("a".to_owned())));
        assert_eq!(parse_dict(":1"), Err(ValueError::DictEmptyKey));
        assert_eq!(
            parse_dict("a:1,a:2"),
            Err(ValueError::DictDuplicateKey("a".to_owned()))
        );
    }

    #[test]
    fn port_ranges_expand() {
        let items = parse_list("3306, 4444, 4567-4568");
        assert_eq!(expand_port_ranges(&items), Ok(vec![3306, 4444, 4567, 4568]));
        assert_eq!(expand_port_ranges(&parse_list("5432,5432")), Ok(vec![5432]));
        for bad in ["0", "70000", "10-5", "a", "1-", "-1"] {
            assert_eq!(
                expand_port_ranges(&[bad.to_owned()]),
                Err(ValueError::PortRange(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
