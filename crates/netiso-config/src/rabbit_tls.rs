//! The `[oslo_messaging_rabbit]` TLS options (`ssl`, `ssl_version`, `ssl_ca_file`,
//! `ssl_cert_file`, `ssl_key_file`), read as oslo.messaging 18.3.1 reads them: the
//! `transport_url` query first, then the files; the other four only matter when `ssl` is on.
//! Whether the files are usable is decided where they are loaded (the messaging crate), so
//! that the error names what is wrong with their contents.

use std::path::PathBuf;

use crate::error::{ConfigError, OptionLocation};
use crate::guest::RABBIT_SECTION;
use crate::source::{Origin, OsloConfig};
use crate::transport_url::TransportUrl;
use crate::value::{self, ValueError};

/// `ssl_version`: which TLS versions the connection may use.
///
/// oslo maps the value (any case) to a Python `ssl.PROTOCOL_*` constant: `SSLv23` (or no
/// value) negotiates, `TLSv1_2` pins TLS 1.2. oslo also accepts `TLSv1` and `TLSv1_1` (and
/// `SSLv2`/`SSLv3` where Python still has them); rustls implements none of these obsolete
/// protocols, so they are refused rather than silently upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslVersion {
    /// No value or `SSLv23`: TLS 1.2 or 1.3, whichever both sides support best.
    #[default]
    Negotiate,
    /// `TLSv1_2`: TLS 1.2 only.
    Tls12,
}

impl SslVersion {
    /// Parses oslo's spelling; an empty value is [`SslVersion::Negotiate`].
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "sslv23" => Ok(Self::Negotiate),
            "tlsv1_2" => Ok(Self::Tls12),
            "tlsv1" | "tlsv1_1" | "sslv2" | "sslv3" => {
                Err(ValueError::ObsoleteSslVersion(text.to_owned()))
            }
            _ => Err(ValueError::Choice {
                value: text.to_owned(),
                choices: "SSLv23 (TLS 1.2 or 1.3) and TLSv1_2, as oslo.messaging spells them",
            }),
        }
    }
}

/// The TLS settings of the connection to RabbitMQ. With `ssl` off the other fields are
/// their defaults, whatever the files say (oslo does not read them either).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RabbitTlsOptions {
    /// `ssl`: connect over TLS.
    pub ssl: bool,
    /// `ssl_version`.
    pub ssl_version: SslVersion,
    /// `ssl_ca_file`: the CAs the broker's certificate must chain to (`None`: the system
    /// trust store).
    pub ssl_ca_file: Option<PathBuf>,
    /// `ssl_cert_file`: the client certificate (PEM), optionally followed by its key.
    pub ssl_cert_file: Option<PathBuf>,
    /// `ssl_key_file`: the client certificate's private key (PEM).
    pub ssl_key_file: Option<PathBuf>,
}

impl RabbitTlsOptions {
    /// Reads the options, each from the URL's query when it is there (oslo's
    /// `ConfigOptsProxy`), else from the files.
    pub fn from_oslo(config: &OsloConfig, url: &TransportUrl) -> Result<Self, ConfigError> {
        let query_error = |option: &str, reason: ValueError| ConfigError::InvalidValue {
            location: OptionLocation::boxed(Origin::TransportUrlQuery, RABBIT_SECTION, option),
            reason,
        };
        let ssl = match url.query_value("ssl") {
            Some(text) => value::parse_bool(text).map_err(|reason| query_error("ssl", reason))?,
            None => config.bool(RABBIT_SECTION, "ssl")?.unwrap_or(false),
        };
        if !ssl {
            return Ok(Self::default());
        }
        let path = |option: &str| -> Result<Option<PathBuf>, ConfigError> {
            let text = match url.query_value(option) {
                Some(text) => Some(text.to_owned()),
                None => config.string(RABBIT_SECTION, option)?,
            };
            Ok(text.filter(|t| !t.is_empty()).map(PathBuf::from))
        };
        let ssl_version = match url.query_value("ssl_version") {
            Some(text) => {
                SslVersion::parse(text).map_err(|reason| query_error("ssl_version", reason))?
            }
            None => match config.get(RABBIT_SECTION, "ssl_version")? {
                Some(raw) => raw.convert(SslVersion::parse)?,
                None => SslVersion::default(),
            },
        };
        let options = Self {
            ssl,
            ssl_version,
            ssl_ca_file: path("ssl_ca_file")?,
            ssl_cert_file: path("ssl_cert_file")?,
            ssl_key_file: path("ssl_key_file")?,
        };
        if options.ssl_key_file.is_some() && options.ssl_cert_file.is_none() {
            return Err(ConfigError::Conflict(
                "[oslo_messaging_rabbit] ssl_key_file is set without ssl_cert_file: a client \
                 key is of no use without its certificate (oslo ignores it silently; set \
                 ssl_cert_file or remove ssl_key_file)"
                    .to_owned(),
            ));
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::str::FromStr;

    use super::*;
    use crate::ini::IniFile;

    fn read(text: &str, url: &str) -> Result<RabbitTlsOptions, ConfigError> {
        let mut config = OsloConfig::default();
        config.add_file(&IniFile::parse(Path::new("a.conf"), text).expect("valid ini"));
        RabbitTlsOptions::from_oslo(&config, &TransportUrl::from_str(url).expect("url"))
    }

    #[test]
    fn ssl_off_ignores_the_other_options() {
        let options = read(
            "[oslo_messaging_rabbit]\nssl = false\nssl_version = SSLv3\nssl_ca_file = /x\n",
            "rabbit://h/",
        )
        .expect("ssl off");
        assert_eq!(options, RabbitTlsOptions::default());
        assert_eq!(
            read("", "rabbit://h/").expect("unset"),
            RabbitTlsOptions::default()
        );
    }

    #[test]
    fn ssl_on_reads_files_and_versions() {
        let options = read(
            "[oslo_messaging_rabbit]\nssl = True\nssl_version = tlsv1_2\n\
             ssl_ca_file = /etc/trove/ca.pem\nssl_cert_file = /c.pem\nssl_key_file = /k.pem\n",
            "rabbit://h:5671/",
        )
        .expect("ssl on");
        assert_eq!(
            options,
            RabbitTlsOptions {
                ssl: true,
                ssl_version: SslVersion::Tls12,
                ssl_ca_file: Some(PathBuf::from("/etc/trove/ca.pem")),
                ssl_cert_file: Some(PathBuf::from("/c.pem")),
                ssl_key_file: Some(PathBuf::from("/k.pem")),
            }
        );
        let defaults = read(
            "[oslo_messaging_rabbit]\nssl = yes\nssl_ca_file =\n",
            "rabbit://h/",
        )
        .expect("defaults");
        assert_eq!(defaults.ssl_version, SslVersion::Negotiate);
        assert_eq!(
            defaults.ssl_ca_file, None,
            "an empty value is unset, as in oslo"
        );
    }

    #[test]
    fn the_url_query_overrides_the_files() {
        let options = read(
            "[oslo_messaging_rabbit]\nssl = false\nssl_ca_file = /file-ca.pem\n",
            "rabbit://h:5671/?ssl=1&ssl_ca_file=/query-ca.pem&ssl_version=SSLv23",
        )
        .expect("query");
        assert!(options.ssl);
        assert_eq!(options.ssl_ca_file, Some(PathBuf::from("/query-ca.pem")));
        assert_eq!(options.ssl_version, SslVersion::Negotiate);
        let off = read(
            "[oslo_messaging_rabbit]\nssl = true\n",
            "rabbit://h/?ssl=false",
        )
        .expect("query turns it off");
        assert!(!off.ssl);
    }

    #[test]
    fn versions_rustls_cannot_do_are_refused_by_name() {
        for version in ["TLSv1", "tlsv1_1", "SSLv3", "SSLv2"] {
            let error = read(
                &format!("[oslo_messaging_rabbit]\nssl = true\nssl_version = {version}\n"),
                "rabbit://h/",
            )
            .expect_err(version)
            .to_string();
            assert!(
                error.starts_with("a.conf:3: [oslo_messaging_rabbit] ssl_version:")
                    && error.contains(version)
                    && error.contains("rustls"),
                "{error}"
            );
        }
        let error = read("", "rabbit://h/?ssl=true&ssl_version=TLSv1_3")
            .expect_err("unknown to oslo")
            .to_string();
        assert!(
            error.starts_with("transport_url query: [oslo_messaging_rabbit] ssl_version:")
                && error.contains("TLSv1_3"),
            "{error}"
        );
        let error = read("", "rabbit://h/?ssl=maybe")
            .expect_err("not a boolean")
            .to_string();
        assert!(error.contains("] ssl:"), "{error}");
    }

    #[test]
    fn a_key_without_its_certificate_is_refused() {
        let error = read(
            "[oslo_messaging_rabbit]\nssl = true\nssl_key_file = /k.pem\n",
            "rabbit://h/",
        )
        .expect_err("key alone")
        .to_string();
        assert!(
            error.contains("ssl_key_file") && error.contains("ssl_cert_file"),
            "{error}"
        );
    }
}
