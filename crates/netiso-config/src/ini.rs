//! oslo.config's INI dialect, parsed by hand with line numbers kept.
//!
//! Why not `rust-ini` or `configparser`: oslo's dialect differs from both in details that
//! change values. Backslashes are plain characters (rust-ini unescapes them by default),
//! `key: value` is as valid as `key = value` and the *first* of `:`/`=` splits, an indented
//! line continues the previous value (joined with `\n`) while an indented line with no value
//! to continue is an error, repeated keys keep every value (oslo's `MultiStrOpt`), and section
//! names other than `DEFAULT` are matched case-insensitively. Above all, neither crate reports
//! the line a value came from, and every type error here must name file, line, section and
//! option. The grammar is about forty lines, so we own it (mirroring
//! `oslo_config/iniparser.py` of oslo.config 10.7.0).
//!
//! [`IniFile`] is also a [`figment::Provider`], so tooling that prefers figment can merge
//! oslo files with its other sources.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// A syntax error, naming the file and the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {kind}: {text:?}", path.display())]
pub struct IniSyntaxError {
    /// The file being parsed.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: IniSyntaxErrorKind,
    /// The offending line, as written.
    pub text: String,
}

/// The syntax errors oslo.config's parser raises, with its wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IniSyntaxErrorKind {
    /// A non-comment line with neither `=` nor `:`.
    #[error("no ':' or '=' found in assignment")]
    InvalidAssignment,
    /// `= value` with nothing before the separator.
    #[error("key cannot be empty")]
    EmptyKey,
    /// An indented line with no assignment before it to continue.
    #[error("unexpected continuation line")]
    UnexpectedContinuation,
    /// `[name` without `]`.
    #[error("invalid section (must end with ])")]
    SectionWithoutEndBracket,
    /// `[]`.
    #[error("empty section name")]
    EmptySectionName,
    /// An assignment before any `[section]`.
    #[error("section must be started before assignment")]
    AssignmentOutsideSection,
    /// The file is not UTF-8.
    #[error("file is not valid UTF-8")]
    InvalidUtf8,
}

/// One `key = value` assignment, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    /// The section as normalised by oslo ([`normalize_section`]).
    pub section: String,
    /// The option name, as written (oslo matches it case-sensitively).
    pub key: String,
    /// The value: quotes stripped, continuation lines joined with `\n`.
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// A parsed oslo.config file: its assignments in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniFile {
    path: PathBuf,
    entries: Vec<IniEntry>,
}

/// oslo's group-name rule: `DEFAULT` stays as is, every other section name is lowercased
/// (so `[Network]` is `[network]`, but `[default]` is *not* `[DEFAULT]`).
pub fn normalize_section(name: &str) -> String {
    if name == "DEFAULT" {
        name.to_owned()
    } else {
        name.to_lowercase()
    }
}

/// Python's `str.isspace`, which `strip()` uses (slightly wider than Rust's).
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn python_strip(text: &str) -> &str {
    text.trim_matches(is_python_space)
}

/// Python's universal-newline `readlines()`: `\r\n`, `\r` and `\n` all end a line.
fn universal_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(end) => {
                let after = if current[end..].starts_with("\r\n") {
                    end + 2
                } else {
                    end + 1
                };
                rest = Some(&current[after..]).filter(|r| !r.is_empty());
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// What a syntax error may quote of a line: nothing when it may hold a secret (a password,
/// an RPC key, credentials in a URL), since errors end up in logs.
fn shown_line(text: &str) -> String {
    let lower = text.to_lowercase();
    let secret = ["password", "transport_url", "encr_key", "secret", "@"]
        .iter()
        .any(|marker| lower.contains(marker));
    if secret {
        "<line not shown: it may contain a secret>".to_owned()
    } else {
        text.to_owned()
    }
}

/// Line breaks in `bytes` under universal newlines (`\r\n` counts once).
fn universal_line_breaks(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .enumerate()
        .filter(|(at, b)| **b == b'\n' || (**b == b'\r' && bytes.get(at + 1) != Some(&b'\n')))
        .count()
}

/// The assignment being collected (its value may continue on indented lines).
struct Pending {
    key: String,
    values: Vec<String>,
    line: usize,
}

impl IniFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, crate::ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| crate::ConfigError::Io {
            path: path.to_owned(),
            source: std::sync::Arc::new(source),
        })?;
        Ok(Self::parse_bytes(path, &bytes)?)
    }

    /// Parses file content that may not be UTF-8 (the error names the first bad line).
    pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Self, IniSyntaxError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse(path, text),
            Err(error) => {
                let valid = &bytes[..error.valid_up_to()];
                let line_start = valid
                    .iter()
                    .rposition(|b| matches!(b, b'\n' | b'\r'))
                    .map_or(0, |at| at + 1);
                let line_end = bytes[line_start..]
                    .iter()
                    .position(|b| matches!(b, b'\n' | b'\r'))
                    .map_or(bytes.len(), |at| line_start + at);
                Err(IniSyntaxError {
                    path: path.to_owned(),
                    line: 1 + universal_line_breaks(valid),
                    kind: IniSyntaxErrorKind::InvalidUtf8,
                    text: shown_line(&String::from_utf8_lossy(&bytes[line_start..line_end])),
                })
            }
        }
    }

    /// Parses `text`; `path` is only used to name the file in errors and origins.
    pub fn parse(path: &Path, text: &str) -> Result<Self, IniSyntaxError> {
        let error = |line: usize, kind: IniSyntaxErrorKind, text: &str| IniSyntaxError {
            path: path.to_owned(),
            line,
            kind,
            text: shown_line(text),
        };
        let mut entries = Vec::new();
        let mut section: Option<String> = None;
        let mut pending: Option<Pending> = None;
        let mut flush = |pending: &mut Option<Pending>, section: &Option<String>| {
            let Some(done) = pending.take() else {
                return Ok(());
            };
            let Some(section) = section else {
                return Err((done.line, done.key));
            };
            entries.push(IniEntry {
                section: normalize_section(section),
                key: done.key,
                value: done.values.join("\n"),
                line: done.line,
            });
            Ok(())
        };
        let outside_section = |(line, key): (usize, String)| {
            error(line, IniSyntaxErrorKind::AssignmentOutsideSection, &key)
        };

        for (index, raw) in universal_lines(text).enumerate() {
            let number = index + 1;
            let line = raw.trim_end_matches(is_python_space);
            if line.is_empty() {
                flush(&mut pending, &section).map_err(outside_section)?;
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match pending.as_mut() {
                    Some(open) => open
                        .values
                        .push(line.trim_start_matches(is_python_space).to_owned()),
                    None => {
                        return Err(error(
                            number,
                            IniSyntaxErrorKind::UnexpectedContinuation,
                            raw,
                        ));
                    }
                }
                continue;
            }
            flush(&mut pending, &section).map_err(outside_section)?;
            if line.starts_with('[') {
                if !line.ends_with(']') {
                    return Err(error(
                        number,
                        IniSyntaxErrorKind::SectionWithoutEndBracket,
                        raw,
                    ));
                }
                if line.len() <= 2 {
                    return Err(error(number, IniSyntaxErrorKind::EmptySectionName, raw));
                }
                section = Some(line[1..line.len() - 1].to_owned());
            } else if line.starts_with(['#', ';']) {
                continue;
            } else {
                let (key, value) = split_key_value(line)
                    .ok_or_else(|| error(number, IniSyntaxErrorKind::InvalidAssignment, raw))?;
                if key.is_empty() {
                    return Err(error(number, IniSyntaxErrorKind::EmptyKey, raw));
                }
                pending = Some(Pending {
                    key: key.to_owned(),
                    values: vec![value.to_owned()],
                    line: number,
                });
            }
        }
        flush(&mut pending, &section).map_err(outside_section)?;
        Ok(Self {
            path: path.to_owned(),
            entries,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every assignment, in file order (repeated keys appear several times).
    pub fn entries(&self) -> &[IniEntry] {
        &self.entries
    }

    /// The last value of `key` in `section` (oslo: the last assignment wins).
    pub fn get(&self, section: &str, key: &str) -> Option<&IniEntry> {
        let section = normalize_section(section);
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.section == section && entry.key == key)
    }
}

/// Splits at the first `=` or `:`, strips, and removes one pair of matching quotes.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let at = line.find(['=', ':'])?;
    let key = python_strip(&line[..at]);
    let mut value = python_strip(&line[at + 1..]);
    let quoted = value.starts_with(['"', '\'']) && value.chars().last() == value.chars().next();
    if quoted {
        value = value
            .get(1..value.len().saturating_sub(1))
            .unwrap_or_default();
    }
    Some((key, value))
}

/// Section → option → value (a string, or an array of strings for a repeated option).
pub(crate) fn entries_to_dict<'a>(
    entries: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
) -> Dict {
    let mut sections: Dict = Dict::new();
    for (section, key, value) in entries {
        let Value::Dict(_, options) = sections
            .entry(section.to_owned())
            .or_insert_with(|| Value::from(Dict::new()))
        else {
            continue;
        };
        let value = Value::from(value.to_owned());
        match options.remove(key) {
            None => {
                options.insert(key.to_owned(), value);
            }
            Some(Value::Array(tag, mut values)) => {
                values.push(value);
                options.insert(key.to_owned(), Value::Array(tag, values));
            }
            Some(previous) => {
                options.insert(key.to_owned(), Value::from(vec![previous, value]));
            }
        }
    }
    sections
}

impl Provider for IniFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("oslo.config INI file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = entries_to_dict(
            self.entries
                .iter()
                .map(|e| (e.section.as_str(), e.key.as_str(), e.value.as_str())),
        );
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;

    fn parse(text: &str) -> IniFile {
        IniFile::parse(Path::new("test.conf"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn values(text: &str) -> Vec<(String, String, String)> {
        parse(text)
            .entries()
            .iter()
            .map(|e| (e.section.clone(), e.key.clone(), e.value.clone()))
            .collect()
    }

    fn triple(section: &str, key: &str, value: &str) -> (String, String, String) {
        (section.to_owned(), key.to_owned(), value.to_owned())
    }

    fn error_of(text: &str) -> IniSyntaxError {
        IniFile::parse(Path::new("bad.conf"), text).expect_err("must be rejected")
    }

    #[test]
    fn equals_and_colon_both_separate_and_the_first_one_wins() {
        assert_eq!(
            values("[network]\nnetwork_isolation: True\n[DEFAULT]\na = b:c\nd: e=f\n"),
            [
                triple("network", "network_isolation", "True"),
                triple("DEFAULT", "a", "b:c"),
                triple("DEFAULT", "d", "e=f"),
            ]
        );
    }

    #[test]
    fn full_line_comments_only() {
        assert_eq!(
            values("# c\n; c\n[DEFAULT]\n#a=1\n;b=2\nc=3 # kept\nd=x ; kept\n"),
            [
                triple("DEFAULT", "c", "3 # kept"),
                triple("DEFAULT", "d", "x ; kept")
            ]
        );
    }

    #[test]
    fn indented_lines_continue_the_value() {
        assert_eq!(
            values("[DEFAULT]\na = one\n  two\n\tthree\n\nb = x\n   # text, not a comment\n"),
            [
                triple("DEFAULT", "a", "one\ntwo\nthree"),
                triple("DEFAULT", "b", "x\n# text, not a comment")
            ]
        );
    }

    #[test]
    fn repeated_keys_keep_every_value_and_get_returns_the_last() {
        let file = parse("[DEFAULT]\nserver = a\nserver = b\n");
        assert_eq!(file.entries().len(), 2);
        assert_eq!(
            file.get("DEFAULT", "server")
                .map(|e| (e.value.as_str(), e.line)),
            Some(("b", 3))
        );
    }

    #[test]
    fn backslashes_are_plain_characters() {
        assert_eq!(
            values("[DEFAULT]\np = a\\nb\\\\c\\\n"),
            [triple("DEFAULT", "p", "a\\nb\\\\c\\")]
        );
    }

    #[test]
    fn one_pair_of_matching_quotes_is_stripped() {
        assert_eq!(
            values("[DEFAULT]\na = \"x\"\nb = 'y\"\nc = \"\nd = ''\ne = \"a 'b'\"\n"),
            [
                triple("DEFAULT", "a", "x"),
                triple("DEFAULT", "b", "'y\""),
                triple("DEFAULT", "c", ""),
                triple("DEFAULT", "d", ""),
                triple("DEFAULT", "e", "a 'b'"),
            ]
        );
    }

    #[test]
    fn section_names_are_lowercased_except_default() {
        assert_eq!(
            values("[Network]\nX=1\n[default]\na=1\n[DEFAULT]\nb=2\n"),
            [
                triple("network", "X", "1"),
                triple("default", "a", "1"),
                triple("DEFAULT", "b", "2")
            ]
        );
    }

    #[test]
    fn keys_are_case_sensitive_and_values_trimmed() {
        let file = parse("[DEFAULT]\nGuest_ID =  abc   \n");
        assert!(file.get("DEFAULT", "guest_id").is_none());
        assert_eq!(
            file.get("DEFAULT", "Guest_ID").map(|e| e.value.as_str()),
            Some("abc")
        );
    }

    #[test]
    fn universal_newlines() {
        assert_eq!(
            values("[DEFAULT]\r\na = 1\r\n  cont\r\nb=2\rc=3"),
            [
                triple("DEFAULT", "a", "1\ncont"),
                triple("DEFAULT", "b", "2"),
                triple("DEFAULT", "c", "3")
            ]
        );
    }

    #[test]
    fn line_numbers_are_those_of_the_key() {
        let file = parse("\n# x\n[DEFAULT]\n\na = 1\n  2\nb = 3\n");
        let lines: Vec<usize> = file.entries().iter().map(|e| e.line).collect();
        assert_eq!(lines, [5, 7]);
    }

    #[test]
    fn syntax_errors_name_file_line_and_kind() {
        let cases: [(&str, usize, IniSyntaxErrorKind); 7] = [
            ("[DEFAULT]\nabc\n", 2, IniSyntaxErrorKind::InvalidAssignment),
            ("[DEFAULT]\n= 1\n", 2, IniSyntaxErrorKind::EmptyKey),
            ("  x = 1\n", 1, IniSyntaxErrorKind::UnexpectedContinuation),
            (
                "[DEFAULT]\na=1\n# c\n  b\n",
                4,
                IniSyntaxErrorKind::UnexpectedContinuation,
            ),
            (
                "[DEFAULT\n",
                1,
                IniSyntaxErrorKind::SectionWithoutEndBracket,
            ),
            ("[]\n", 1, IniSyntaxErrorKind::EmptySectionName),
            ("\na = 1\n", 2, IniSyntaxErrorKind::AssignmentOutsideSection),
        ];
        for (text, line, kind) in cases {
            let error = error_of(text);
            assert_eq!((error.line, error.kind), (line, kind), "{text:?}");
            assert!(
                error.to_string().starts_with(&format!("bad.conf:{line}: ")),
                "{error}"
            );
        }
    }

    #[test]
    fn syntax_errors_do_not_quote_lines_that_may_hold_secrets() {
        let error = error_of("[DEFAULT]\nadmin_password hunter2\n");
        assert_eq!(error.line, 2);
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error = error_of("[DEFAULT]\nplain line\n");
        assert_eq!(error.text, "plain line");
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let error = IniFile::parse_bytes(
            Path::new("bin.conf"),
            b"[DEFAULT]\r\nx = 1\rb = \xff\nc = 2",
        )
        .expect_err("not UTF-8");
        assert_eq!(
            (error.line, error.kind, error.text.as_str()),
            (3, IniSyntaxErrorKind::InvalidUtf8, "b = \u{fffd}")
        );
    }

    #[test]
    fn figment_provider_exposes_sections_and_merges_later_files_over_earlier() {
        #[derive(serde::Deserialize)]
        struct Network {
            network_isolation: String,
        }
        #[derive(serde::Deserialize)]
        struct Conf {
            #[serde(rename = "DEFAULT")]
            default: std::collections::BTreeMap<String, figment::value::Value>,
            network: Network,
        }
        let first = IniFile::parse(
            Path::new("/a.conf"),
            "[DEFAULT]\nx = 1\nm = a\nm = b\n[network]\nnetwork_isolation = True\n",
        )
        .expect("valid");
        let second = IniFile::parse(
            Path::new("/b.conf"),
            "[network]\nnetwork_isolation: False\n",
        )
        .expect("valid");
        let figment = Figment::new().merge(&first).merge(&second);
        let conf: Conf = figment.extract().expect("extracts");
        assert_eq!(conf.network.network_isolation, "False");
        assert_eq!(conf.default.get("x").and_then(|v| v.as_str()), Some("1"));
        let multi = conf
            .default
            .get("m")
            .and_then(|v| v.as_array())
            .expect("repeated key is an array");
        assert_eq!(
            multi.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let metadata = figment
            .find_metadata("network.network_isolation")
            .expect("tracked");
        assert_eq!(
            metadata.source.as_ref().and_then(|s| s.file_path()),
            Some(Path::new("/b.conf"))
        );
    }
}
