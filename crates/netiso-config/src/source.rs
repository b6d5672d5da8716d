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

    /// The winning value of an option, trying `names` in priority order (current name
    /// first, then deprecated names).
    pub fn lookup(&self, names: &[OptionName<'_>]) -> Option<&RawValue> {
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

    /// The winning value of `[section] option`.
    pub fn get(&self, section: &str, option: &str) -> Option<&RawValue> {
        self.lookup(&[OptionName::new(section, option)])
    }

    /// Every assignment of a multi-valued option, in load order.
    pub fn get_all(&self, section: &str, option: &str) -> Vec<&RawValue> {
        let section = normalize_section(section);
        self.values
            .iter()
            .filter(|v| v.section == section && v.option == option)
            .collect()
    }

    /// Whether a section has any assignment at all.
    pub fn has_section(&self, section: &str) -> bool {
        let section = normalize_section(section);
        self.values.iter().any(|v| v.section == section)
    }

    /// A string option.
    pub fn string(&self, section: &str, option: &str) -> Option<String> {
        self.get(section, option).map(|raw| raw.value.clone())
    }

    /// A required string option; `hint` says who normally writes it.
    pub fn required_string(
        &self,
        section: &str,
        option: &str,
        hint: &'static str,
    ) -> Result<String, ConfigError> {
        match self.get(section, option) {
            Some(raw) if !raw.value.is_empty() => Ok(raw.value.clone()),
            _ => Err(ConfigError::MissingOption {
                section: section.to_owned(),
                option: option.to_owned(),
                hint,
            }),
        }
    }

    /// A boolean option (`None` when unset).
    pub fn bool(&self, section: &str, option: &str) -> Result<Option<bool>, ConfigError> {
        self.get(section, option)
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
            .get(section, option)
            .map(|raw| raw.convert(|text| value::parse_int_in(text, min, max)))
            .transpose()?
            .flatten())
    }

    /// A list option (`None` when unset).
    pub fn list(&self, section: &str, option: &str) -> Option<Vec<String>> {
        self.get(section, option)
            .map(|raw| value::parse_list(&raw.value))
    }

    /// A `transport_url`-style option.
    pub fn transport_url(
        &self,
        section: &str,
        option: &str,
    ) -> Result<Option<TransportUrl>, ConfigError> {
        self.get(section, option)
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
