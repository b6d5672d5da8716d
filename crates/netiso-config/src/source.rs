//! Where configuration comes from and how sources combine, the oslo.config way.
//!
//! Load order (later overrides earlier, as in oslo.config):
//! 1. every `--config-file`, in the order given;
//! 2. for every `--config-dir`, its `*.conf` files (not hidden ones) in sorted order;
//! 3. environment variables `NETISO_<SECTION>__<OPTION>` (read through figment's `Env`).
//!
//! A single-valued option takes its value from the last source that sets it, and within
//! that file from its last assignment. A multi-valued option (`MultiStrOpt`) takes every
//! assignment of every file, in load order. Deprecated names are looked up like oslo: the
//! latest file that sets the option under *any* of its names wins, and within one file the
//! current name beats the deprecated ones.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};

use crate::error::{ConfigError, OptionLocation};
use crate::ini::{IniFile, entries_to_dict, normalize_section};
use crate::transport_url::{TransportUrl, TransportUrlError};
use crate::value::{self, ValueError};

/// Prefix of environment overrides: `NETISO_DEFAULT__GUEST_ID=…` sets `[DEFAULT] guest_id`.
pub const ENV_PREFIX: &str = "NETISO_";
/// Separator between section and option in an environment override's name.
pub const ENV_SEPARATOR: &str = "__";

/// The files to read, like oslo's `--config-file` and `--config-dir` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSources {
    /// Read first, in this order.
    pub config_files: Vec<PathBuf>,
    /// Then each directory's `*.conf`, sorted by name.
    pub config_dirs: Vec<PathBuf>,
}

impl ConfigSources {
    /// The guest agent's command line: `guest-agent --config-dir=/etc/trove/conf.d`.
    pub fn guest_default() -> Self {
        Self {
            config_files: Vec::new(),
            config_dirs: vec![PathBuf::from("/etc/trove/conf.d")],
        }
    }

    /// The files in load order: config files, then each directory's sorted `*.conf`.
    pub fn files_in_load_order(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut files = Vec::new();
        for file in &self.config_files {
            if !file.is_file() {
                return Err(ConfigError::ConfigFileNotFound { path: file.clone() });
            }
            files.push(file.clone());
        }
        for dir in &self.config_dirs {
            let listing = std::fs::read_dir(dir)
                .map_err(|_| ConfigError::ConfigDirNotFound { path: dir.clone() })?;
            let mut confs = Vec::new();
            for entry in listing {
                let entry = entry.map_err(|source| ConfigError::Io {
                    path: dir.clone(),
                    source: Arc::new(source),
                })?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".conf") && !name.starts_with('.') && entry.path().is_file() {
                    confs.push(entry.path());
                }
            }
            confs.sort();
            files.extend(confs);
        }
        Ok(files)
    }
}

/// Where a value was written: used by every error about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of an INI file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the option's key.
        line: usize,
    },
    /// An environment override.
    Environment {
        /// The variable's name.
        variable: String,
    },
    /// A query parameter of `transport_url` (oslo lets them override rabbit options).
    TransportUrlQuery,
    /// A value supplied by code (for example a renderer's input).
    Builtin,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Environment { variable } => write!(f, "environment variable {variable}"),
            Origin::TransportUrlQuery => f.write_str("transport_url query"),
            Origin::Builtin => f.write_str("built-in value"),
        }
    }
}

/// One assignment kept as text, with its origin, until an option's type is known.
/// `Debug` hides the text of options that hold secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct RawValue {
    /// The text, as oslo's parser delivers it.
    pub value: String,
    /// Where it was written.
    pub origin: Origin,
    /// Position of its source in load order (later sources win).
    source_rank: usize,
    section: String,
    option: String,
}

/// Every assignment of every source, ready for typed look-ups.
#[derive(Clone, Default)]
pub struct OsloConfig {
    values: Vec<RawValue>,
    files: Vec<PathBuf>,
}

/// An option's name in the files, with the section it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionName<'a> {
    /// Section (group); `DEFAULT` for global options.
    pub section: &'a str,
    /// Option name.
    pub option: &'a str,
}

impl<'a> OptionName<'a> {
    /// `[section] option`.
    pub const fn new(section: &'a str, option: &'a str) -> Self {
        Self { section, option }
    }
}

impl OsloConfig {
    /// Loads the files of `sources` and the process environment's `NETISO_` overrides.
    pub fn load(sources: &ConfigSources) -> Result<Self, ConfigError> {
        let env = figment::providers::Env::prefixed(ENV_PREFIX).lowercase(false);
        let variables = env
            .iter()
            .map(|(key, value)| (format!("{ENV_PREFIX}{}", key.as_str()), value));
        Self::load_with_env(sources, variables)
    }

    /// Like [`OsloConfig::load`], with the environment given explicitly (full variable
    /// names; names without the prefix or without `__` are ignored).
    pub fn load_with_env(
        sources: &ConfigSources,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        for path in sources.files_in_load_order()? {
            config.add_file(&IniFile::read(&path)?);
        }
        config.add_env(env);
        Ok(config)
    }

    /// Adds a parsed file after the ones already added.
    pub fn add_file(&mut self, file: &IniFile) {
        let rank = self.files.len();
        self.files.push(file.path().to_owned());
        self.values
            .extend(file.entries().iter().map(|entry| RawValue {
                value: entry.value.clone(),
                origin: Origin::File {
                    path: file.path().to_owned(),
                    line: entry.line,
                },
                source_rank: rank,
                section: entry.section.clone(),
                option: entry.key.clone(),
            }));
    }

    /// Adds environment overrides (`NETISO_<SECTION>__<OPTION>`), which beat every file.
    /// The section `DEFAULT` is matched case-insensitively; option names are lowercased.
    pub fn add_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        let rank = self.files.len();
        let mut overrides: Vec<(String, String)> = env.into_iter().collect();
        overrides.sort();
        for (variable, value) in overrides {
            let Some((section, option)) = variable
                .strip_prefix(ENV_PREFIX)
                .and_then(|rest| rest.split_once(ENV_SEPARATOR))
            else {
                continue;
            };
            if section.is_empty() || option.is_empty() {
                continue;
            }
            let section = if section.eq_ignore_ascii_case("DEFAULT") {
                "DEFAULT".to_owned()
            } else {
                normalize_section(section)
            };
            self.values.push(RawValue {
                option: option.to_lowercase(),
                section,
                value,
                origin: Origin::Environment { variable },
                source_rank: rank,
            });
        }
    }

    /// The files read, in load order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The winning assignment of an option, before `$` substitution, trying `names` in
    /// priority order (current name first, then deprecated names).
    fn winner(&self, names: &[OptionName<'_>]) -> Option<&RawValue> {
        let mut best: Option<(&RawValue, usize)> = None;
        for (priority, name) in names.iter().enumerate() {
            let section = normalize_section(name.section);
            let found = self
                .values
                .iter()
                .rfind(|v| v.section == section && v.option == name.option);
            if let Some(candidate) = found {
                let better = match best {
                    None => true,
                    Some((current, current_priority)) => {
                        candidate.source_rank > current.source_rank
                            || (candidate.source_rank == current.source_rank
                                && priority < current_priority)
                    }
                };
                if better {
                    best = Some((candidate, priority));
                }
            }
        }
        best.map(|(value, _)| value)
    }

    /// The winning value of an option, trying `names` in priority order (current name
    /// first, then deprecated names), with `$` references substituted.
    pub fn lookup(&self, names: &[OptionName<'_>]) -> Result<Option<RawValue>, ConfigError> {
        self.winner(names)
            .map(|raw| self.substitute(raw, 0))
            .transpose()
    }

    /// The winning value of `[section] option`, `$` references substituted.
    pub fn get(&self, section: &str, option: &str) -> Result<Option<RawValue>, ConfigError> {
        self.lookup(&[OptionName::new(section, option)])
    }

    /// Every assignment of a multi-valued option, in load order, substituted.
    pub fn get_all(&self, section: &str, option: &str) -> Result<Vec<RawValue>, ConfigError> {
        let section = normalize_section(section);
        self.values
            .iter()
            .filter(|v| v.section == section && v.option == option)
            .map(|raw| self.substitute(raw, 0))
            .collect()
    }

    /// Whether a section has any assignment at all.
    pub fn has_section(&self, section: &str) -> bool {
        let section = normalize_section(section);
        self.values.iter().any(|v| v.section == section)
    }

    /// A string option.
    pub fn string(&self, section: &str, option: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(section, option)?.map(|raw| raw.value))
    }

    /// A required string option; `hint` says who normally writes it.
    pub fn required_string(
        &self,
        section: &str,
        option: &str,
        hint: &'static str,
    ) -> Result<String, ConfigError> {
        match self.get(section, option)? {
            Some(raw) if !raw.value.is_empty() => Ok(raw.value),
            _ => Err(ConfigError::MissingOption {
                section: section.to_owned(),
                option: option.to_owned(),
                hint,
            }),
        }
    }

    /// A boolean option (`None` when unset).
    pub fn bool(&self, section: &str, option: &str) -> Result<Option<bool>, ConfigError> {
        self.get(section, option)?
            .map(|raw| raw.convert(value::parse_bool))
            .transpose()
    }

    /// An integer option within `min..=max` (`None` when unset or blank).
    pub fn int(
        &self,
        section: &str,
        option: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, ConfigError> {
        Ok(self
            .get(section, option)?
            .map(|raw| raw.convert(|text| value::parse_int_in(text, min, max)))
            .transpose()?
            .flatten())
    }

    /// A list option (`None` when unset).
    pub fn list(&self, section: &str, option: &str) -> Result<Option<Vec<String>>, ConfigError> {
        Ok(self
            .get(section, option)?
            .map(|raw| value::parse_list(&raw.value)))
    }

    /// A dict option (`k:v,k2:v2`; `None` when unset).
    pub fn dict(
        &self,
        section: &str,
        option: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, ConfigError> {
        self.get(section, option)?
            .map(|raw| raw.convert(value::parse_dict))
            .transpose()
    }

    /// A `transport_url`-style option.
    pub fn transport_url(
        &self,
        section: &str,
        option: &str,
    ) -> Result<Option<TransportUrl>, ConfigError> {
        self.get(section, option)?
            .map(|raw| {
                raw.value
                    .parse::<TransportUrl>()
                    .map_err(
                        |reason: TransportUrlError| ConfigError::InvalidTransportUrl {
                            location: raw.location(),
                            reason: Box::new(reason),
                        },
                    )
            })
            .transpose()
    }

    /// oslo.config's template substitution (`ConfigOpts._substitute`): `$$` and `\$` are a
    /// literal `$`; `$name`, `${name}` and `${group.name}` are replaced by that option's
    /// value, looked up in the value's own section, then in `[DEFAULT]` (for
    /// `${group.name}`: that group, then `[DEFAULT]`), itself substituted; a `$` not
    /// followed by a name stays as is. oslo falls back to a referenced option's registered
    /// default, which a reader without the option registry cannot know: a reference to an
    /// option that no source sets is therefore an error naming the value's origin.
    fn substitute(&self, raw: &RawValue, depth: usize) -> Result<RawValue, ConfigError> {
        if !raw.value.contains('$') {
            return Ok(raw.clone());
        }
        let template = raw.value.replace("\\$", "$$");
        let mut out = String::with_capacity(template.len());
        let mut rest = template.as_str();
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(escaped) = after.strip_prefix('$') {
                out.push('$');
                rest = escaped;
                continue;
            }
            let reference = match after.strip_prefix('{') {
                Some(inner) => {
                    let length = identifier_length(inner);
                    (length > 0 && inner[length..].starts_with('}'))
                        .then(|| (&inner[..length], length + 2))
                }
                None => {
                    let length = identifier_length(after);
                    (length > 0).then(|| (&after[..length], length))
                }
            };
            match reference {
                Some((name, consumed)) => {
                    out.push_str(&self.resolve_reference(raw, name, depth)?);
                    rest = &after[consumed..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(RawValue {
            value: out,
            ..raw.clone()
        })
    }

    fn resolve_reference(
        &self,
        from: &RawValue,
        name: &str,
        depth: usize,
    ) -> Result<String, ConfigError> {
        let shown_name = (!is_secret_option(&from.option)).then(|| name.to_owned());
        if depth >= MAX_SUBSTITUTION_DEPTH {
            return Err(from.invalid(ValueError::ReferenceLoop(shown_name)));
        }
        let candidates = match name.split_once('.') {
            Some((group, option)) => [
                OptionName::new(group, option),
                OptionName::new("DEFAULT", name),
            ],
            None => [
                OptionName::new(&from.section, name),
                OptionName::new("DEFAULT", name),
            ],
        };
        for candidate in candidates {
            if let Some(found) = self.winner(&[candidate]) {
                return Ok(self.substitute(found, depth + 1)?.value);
            }
        }
        Err(from.invalid(ValueError::UnresolvedReference(shown_name)))
    }
}

/// How deep `$` references may nest before they count as a loop.
const MAX_SUBSTITUTION_DEPTH: usize = 32;

/// Length of a `string.Template` identifier with oslo's pattern `[_a-z][._a-z0-9]*`
/// (case-insensitive) at the start of `text`.
fn identifier_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '.'))
        .map_or(text.len(), |(index, _)| index)
}

/// Options whose values must never be printed.
fn is_secret_option(option: &str) -> bool {
    option == "transport_url"
        || option == "instance_rpc_encr_key"
        || option.contains("password")
        || option.ends_with("_key")
}

impl fmt::Debug for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if is_secret_option(&self.option) {
            crate::secret::REDACTED
        } else {
            self.value.as_str()
        };
        f.debug_struct("RawValue")
            .field("section", &self.section)
            .field("option", &self.option)
            .field("value", &shown)
            .field("origin", &self.origin)
            .finish()
    }
}

impl fmt::Debug for OsloConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OsloConfig")
            .field("files", &self.files)
            .field("values", &self.values)
            .finish()
    }
}

impl RawValue {
    /// Section the value was written in (normalised).
    pub fn section(&self) -> &str {
        &self.section
    }

    /// Option name the value was written under (may be a deprecated name).
    pub fn option(&self) -> &str {
        &self.option
    }

    /// Converts the text, turning a failure into an error naming origin, section and option.
    pub fn convert<T>(
        &self,
        convert: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Result<T, ConfigError> {
        convert(&self.value).map_err(|reason| self.invalid(reason))
    }

    /// An error about this value.
    pub fn invalid(&self, reason: ValueError) -> ConfigError {
        ConfigError::InvalidValue {
            location: self.location(),
            reason,
        }
    }

    /// Origin, section and option of this value, for errors.
    pub fn location(&self) -> Box<OptionLocation> {
        OptionLocation::boxed(self.origin.clone(), &self.section, &self.option)
    }
}

/// Where a value came from, for figment users: the merged view of every source.
impl Provider for OsloConfig {
    fn metadata(&self) -> Metadata {
        Metadata::named("oslo.config files and NETISO_ environment")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut winners: Vec<&RawValue> = Vec::new();
        for value in &self.values {
            winners.retain(|w| {
                !(w.section == value.section
                    && w.option == value.option
                    && w.source_rank < value.source_rank)
            });
            winners.push(value);
        }
        let dict = entries_to_dict(
            winners
                .iter()
                .map(|v| (v.section.as_str(), v.option.as_str(), v.value.as_str())),
        );
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> OsloConfig {
        let mut config = OsloConfig::default();
        config.add_file(&IniFile::parse(Path::new("s.conf"), text).expect("valid INI"));
        config
    }

    /// Expected values produced by oslo.config 10.7.0 for the same file.
    const TEMPLATES: &str = "[DEFAULT]\nstate_path = /var/lib/trove\nlock_path = $state_path/lock\n\
        braced = ${state_path}x\nescaped = cost $$5 and \\$6\ndangling = 100$ and $ alone and $1x\n\
        grouped = ${netiso.state_dir}/journal\nurl = rabbit://u:pa$$word@h:5672/\n\
        [netiso]\nstate_dir = $state_path/netiso\nown = $mine\nmine = here\n";

    #[test]
    fn dollar_references_are_substituted_like_oslo() {
        let config = config(TEMPLATES);
        let get = |section: &str, option: &str| {
            config
                .string(section, option)
                .expect("resolvable")
                .expect("set")
        };
        assert_eq!(get("DEFAULT", "lock_path"), "/var/lib/trove/lock");
        assert_eq!(get("DEFAULT", "braced"), "/var/lib/trovex");
        assert_eq!(get("DEFAULT", "escaped"), "cost $5 and $6");
        assert_eq!(get("DEFAULT", "dangling"), "100$ and $ alone and $1x");
        assert_eq!(get("DEFAULT", "grouped"), "/var/lib/trove/netiso/journal");
        assert_eq!(get("DEFAULT", "url"), "rabbit://u:pa$word@h:5672/");
        assert_eq!(get("netiso", "own"), "here");
        assert_eq!(get("netiso", "state_dir"), "/var/lib/trove/netiso");
    }

    #[test]
    fn unresolved_reference_names_origin_but_hides_secrets() {
        let config =
            config("[DEFAULT]\npath = $nowhere/x\ntransport_url = rabbit://u:pa$word@h/\n");
        let error = config
            .string("DEFAULT", "path")
            .expect_err("unset reference");
        assert_eq!(
            error.to_string(),
            "s.conf:2: [DEFAULT] path: `$nowhere` refers to an option that no configuration \
             source sets (write `$$` for a literal `$`)"
        );
        let error = config
            .transport_url("DEFAULT", "transport_url")
            .expect_err("password with a bare $");
        let message = error.to_string();
        assert!(
            message.starts_with("s.conf:3: [DEFAULT] transport_url: a `$` reference"),
            "{message}"
        );
        assert!(!message.contains("word"), "{message}");
    }

    #[test]
    fn typed_getters_convert_with_oslo_rules_and_name_the_line() {
        let config = config(
            "[DEFAULT]\nflag = Yes\ncount = 42\nitems = a, b ,c,\nmapping = x:1, y : 2\nbad = a:1,a:2\n",
        );
        assert_eq!(config.bool("DEFAULT", "flag").expect("bool"), Some(true));
        assert_eq!(
            config.int("DEFAULT", "count", 0, 100).expect("int"),
            Some(42)
        );
        assert_eq!(
            config.list("DEFAULT", "items").expect("list"),
            Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        );
        let mapping = config
            .dict("DEFAULT", "mapping")
            .expect("dict")
            .expect("set");
        assert_eq!(mapping.get("y").map(String::as_str), Some("2"));
        let error = config.dict("DEFAULT", "bad").expect_err("duplicate key");
        assert_eq!(
            error.to_string(),
            "s.conf:6: [DEFAULT] bad: duplicate dict key `a`"
        );
        let error = config
            .int("DEFAULT", "count", 0, 10)
            .expect_err("out of range");
        assert_eq!(
            error.to_string(),
            "s.conf:3: [DEFAULT] count: 42 is out of range 0..=10"
        );
        assert_eq!(config.bool("DEFAULT", "unset").expect("unset"), None);
    }

    #[test]
    fn reference_loops_are_errors() {
        let config = config("[DEFAULT]\na = $b\nb = ${a}\n");
        let error = config.string("DEFAULT", "a").expect_err("loop");
        assert!(
            error.to_string().contains("`$b` is part of a loop"),
            "{error}"
        );
    }

    #[test]
    fn environment_names_map_to_sections_and_options() {
        let mut config = OsloConfig::default();
        config.add_env([
            ("NETISO_default__Guest_ID".to_owned(), "a".to_owned()),
            (
                "NETISO_Oslo_Messaging_Rabbit__AMQP_AUTO_DELETE".to_owned(),
                "yes".to_owned(),
            ),
            ("NETISO___OPTION".to_owned(), "no section".to_owned()),
            ("NETISO_SECTION__".to_owned(), "no option".to_owned()),
        ]);
        assert_eq!(
            config.string("DEFAULT", "guest_id").expect("ok").as_deref(),
            Some("a")
        );
        assert_eq!(
            config
                .bool("oslo_messaging_rabbit", "amqp_auto_delete")
                .expect("ok"),
            Some(true)
        );
        assert!(!config.has_section(""));
        assert!(!config.has_section("section"));
    }

    #[test]
    fn figment_view_takes_the_latest_source_per_option() {
        let mut config = config("[DEFAULT]\na = 1\nm = x\nm = y\n");
        config.add_file(&IniFile::parse(Path::new("t.conf"), "[DEFAULT]\na = 2\n").expect("valid"));
        config.add_env([("NETISO_NETISO__RUNTIME".to_owned(), "containerd".to_owned())]);
        let figment = figment::Figment::from(&config);
        assert_eq!(
            figment.extract_inner::<String>("DEFAULT.a").expect("a"),
            "2"
        );
        assert_eq!(
            figment
                .extract_inner::<Vec<String>>("DEFAULT.m")
                .expect("m"),
            ["x", "y"]
        );
        assert_eq!(
            figment
                .extract_inner::<String>("netiso.runtime")
                .expect("runtime"),
            "containerd"
        );
    }
}
