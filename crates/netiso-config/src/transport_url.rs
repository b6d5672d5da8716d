//! oslo.messaging's `transport_url`, parsed exactly as `TransportURL.parse` does.
//!
//! Rules reproduced (oslo.messaging 18.3.1 `transport.py` on top of Python's
//! `urllib.parse.urlparse`):
//! - `scheme://netloc/path?query#fragment`; the netloc ends at the first `/`, `?` or `#`.
//! - The netloc is split on `,`; empty entries are skipped; each entry is
//!   `[user[:password]@]host[:port]`, split at the **last** `@` and the first `:` of the
//!   credentials. User and password are percent-decoded, the hostname is not.
//! - Host and port are split like `oslo_utils.netutils.parse_host_port`: `[v6]:port` is an
//!   IPv6 literal, `host:port` has exactly one `:`, and an unbracketed address with several
//!   `:` is an IPv6 host without port. An empty port (`host:`) is an error, as in oslo.
//! - A host without credentials inherits nothing from the others (oslo only warns).
//! - The virtual host is the percent-decoded path after its leading `/`; `rabbit://h`
//!   has none, `rabbit://h/` has the empty one.
//! - The query is `parse_qs`: `+` is a space, blank values are dropped, repeated keys are
//!   joined with `,` in first-seen order.
//!
//! Where oslo silently accepts nonsense (a port above 65535, text between `]` and `:port`, a
//! host entry with credentials but no host name), this parser fails with an error naming
//! the host, never the password.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::secret::{REDACTED, Secret};

/// A parsed `transport_url`: where and how the guest reaches the message broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportUrl {
    /// Driver name, lowercased (`rabbit`).
    pub scheme: String,
    /// Brokers in the order written; oslo shuffles them for failover.
    pub hosts: Vec<TransportHost>,
    /// Virtual host (`None` when the URL has no path at all).
    pub virtual_host: Option<String>,
    /// Query options, which override `[oslo_messaging_rabbit]` options.
    pub query: Vec<(String, String)>,
}

/// One broker of a [`TransportUrl`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHost {
    /// Host name or IP address (IPv6 without brackets).
    pub hostname: String,
    /// Port, when written.
    pub port: Option<u16>,
    /// Login, percent-decoded.
    pub username: Option<String>,
    /// Password, percent-decoded, redacted in every output.
    pub password: Option<Secret>,
}

/// Why a `transport_url` was rejected. Messages name the host, never its password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportUrlError {
    /// The URL does not start with `scheme:`.
    #[error("transport URL has no scheme (expected e.g. `rabbit://user:pass@host:5672/`)")]
    MissingScheme,
    /// A `[` without its `]` or the reverse.
    #[error("transport URL host #{index}: unbalanced `[`/`]` around an IPv6 address in `{host}`")]
    UnbalancedBracket {
        /// 1-based position of the host in the URL.
        index: usize,
        /// The host part (credentials removed).
        host: String,
    },
    /// The text between brackets is not an IPv6 address.
    #[error("transport URL host #{index}: `{literal}` is not an IPv6 address")]
    InvalidIpv6Literal {
        /// 1-based position of the host in the URL.
        index: usize,
        /// The text between the brackets.
        literal: String,
    },
    /// Something other than `:port` follows `]`.
    #[error(
        "transport URL host #{index}: unexpected `{text}` after the IPv6 address `[{hostname}]`"
    )]
    TrailingTextAfterIpv6 {
        /// 1-based position of the host in the URL.
        index: usize,
        /// The IPv6 address.
        hostname: String,
        /// The unexpected text.
        text: String,
    },
    /// The port is not a number in `0..=65535`.
    #[error(
        "transport URL host #{index} (`{hostname}`): port `{port}` is not a number from 0 to 65535"
    )]
    InvalidPort {
        /// 1-based position of the host in the URL.
        index: usize,
        /// The host name.
        hostname: String,
        /// The port text as written.
        port: String,
    },
    /// Credentials or a port with no host name (`user:pass@:5672`).
    #[error("transport URL host #{index}: no host name before the port or after the credentials")]
    MissingHostname {
        /// 1-based position of the host in the URL.
        index: usize,
    },
}

/// Characters percent-encoded when rendering user info, virtual host and query.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What Python's WHATWG-style clean-up strips from the start of a URL.
fn is_c0_control_or_space(c: char) -> bool {
    c <= ' '
}

/// Python's `unquote`: invalid escapes stay literal, invalid UTF-8 becomes U+FFFD.
fn unquote(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Python's `unquote_plus` for query components.
fn unquote_plus(text: &str) -> String {
    unquote(&text.replace('+', " "))
}

impl FromStr for TransportUrl {
    type Err = TransportUrlError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let cleaned: String = input
            .trim_start_matches(is_c0_control_or_space)
            .chars()
            .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
            .collect();
        let (scheme, rest) = split_scheme(&cleaned).ok_or(TransportUrlError::MissingScheme)?;
        let (netloc, rest) = match rest.strip_prefix("//") {
            Some(after) => {
                let end = after.find(['/', '?', '#']).unwrap_or(after.len());
                after.split_at(end)
            }
            None => ("", rest),
        };
        let rest = rest
            .split_once('#')
            .map_or(rest, |(before, _fragment)| before);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));

        let hosts = netloc
            .split(',')
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(position, entry)| parse_host(position + 1, entry))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(TransportUrl {
            scheme,
            hosts,
            virtual_host: path.strip_prefix('/').map(unquote),
            query: parse_query(query),
        })
    }
}

/// `urlsplit`'s scheme rule: a letter, then letters, digits, `+`, `-`, `.`, then `:`.
fn split_scheme(url: &str) -> Option<(String, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let valid = first_is_letter && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then(|| (scheme.to_ascii_lowercase(), rest))
}

fn parse_host(index: usize, entry: &str) -> Result<TransportHost, TransportUrlError> {
    let (credentials, host) = match entry.rsplit_once('@') {
        Some((credentials, host)) => (Some(credentials), host),
        None => (None, entry),
    };
    let (username, password) = match credentials {
        Some(credentials) => match credentials.split_once(':') {
            Some((user, pass)) => (Some(unquote(user)), Some(Secret::new(unquote(pass)))),
            None => (Some(unquote(credentials)), None),
        },
        None => (None, None),
    };
    let (hostname, port_text) = split_host_port(index, host)?;
    if hostname.is_empty() {
        return Err(TransportUrlError::MissingHostname { index });
    }
    let port = match port_text {
        None => None,
        Some(text) => Some(
            text.parse::<u16>()
                .map_err(|_| TransportUrlError::InvalidPort {
                    index,
                    hostname: hostname.clone(),
                    port: text.to_owned(),
                })?,
        ),
    };
    Ok(TransportHost {
        hostname,
        port,
        username,
        password,
    })
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(index: usize, host: &str) -> Result<(String, Option<&str>), TransportUrlError> {
    let unbalanced = || TransportUrlError::UnbalancedBracket {
        index,
        host: host.to_owned(),
    };
    if let Some(bracketed) = host.strip_prefix('[') {
        let (literal, after) = bracketed.split_once(']').ok_or_else(unbalanced)?;
        let address = literal
            .split_once('%')
            .map_or(literal, |(address, _zone)| address);
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(TransportUrlError::InvalidIpv6Literal {
                index,
                literal: literal.to_owned(),
            });
        }
        return match after.strip_prefix(':') {
            Some(port) => Ok((literal.to_owned(), Some(port))),
            None if after.is_empty() => Ok((literal.to_owned(), None)),
            None => Err(TransportUrlError::TrailingTextAfterIpv6 {
                index,
                hostname: literal.to_owned(),
                text: after.to_owned(),
            }),
        };
    }
    if host.contains(['[', ']']) {
        return Err(unbalanced());
    }
    // oslo_utils.netutils.parse_host_port: exactly one `:` separates a port; more than one
    // means an unbracketed IPv6 address, which cannot carry a port.
    Ok(match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => (name.to_owned(), Some(port)),
        _ => (host.to_owned(), None),
    })
}

/// `parse_qs` followed by oslo's `','.join(values)` per key.
fn parse_query(query: &str) -> Vec<(String, String)> {
    let mut joined: Vec<(String, String)> = Vec::new();
    for pair in query.split('&') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let (name, value) = (unquote_plus(name), unquote_plus(value));
        match joined.iter_mut().find(|(existing, _)| *existing == name) {
            Some((_, values)) => {
                values.push(',');
                values.push_str(&value);
            }
            None => joined.push((name, value)),
        }
    }
    joined
}

impl TransportUrl {
    /// Looks up a query option (for example `ssl` or `heartbeat_timeout_threshold`).
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl fmt::Display for TransportHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(username) = &self.username {
            write!(f, "{}", utf8_percent_encode(username, COMPONENT))?;
        }
        if self.password.is_some() {
            write!(f, ":{REDACTED}")?;
        }
        if self.username.is_some() || self.password.is_some() {
            f.write_str("@")?;
        }
        if self.hostname.contains(':') {
            write!(f, "[{}]", self.hostname)?;
        } else {
            f.write_str(&self.hostname)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Renders the URL with every password replaced by `***`, safe for logs.
impl fmt::Display for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        for (position, host) in self.hosts.iter().enumerate() {
            if position > 0 {
                f.write_str(",")?;
            }
            write!(f, "{host}")?;
        }
        if let Some(virtual_host) = &self.virtual_host {
            write!(f, "/{}", utf8_percent_encode(virtual_host, COMPONENT))?;
        }
        for (position, (key, value)) in self.query.iter().enumerate() {
            let separator = if position == 0 { '?' } else { '&' };
            write!(
                f,
                "{separator}{}={}",
                utf8_percent_encode(key, COMPONENT),
                utf8_percent_encode(value, COMPONENT)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(url: &str) -> TransportUrl {
        url.parse().unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn host(
        hostname: &str,
        port: Option<u16>,
        user: Option<&str>,
        pass: Option<&str>,
    ) -> TransportHost {
        TransportHost {
            hostname: hostname.to_owned(),
            port,
            username: user.map(str::to_owned),
            password: pass.map(Secret::new),
        }
    }

    #[test]
    fn several_hosts_with_credentials_and_vhost() {
        let url = parse("rabbit://user:pass@host1:5672,user2:pass2@host2:5673/vhost?k=v");
        assert_eq!(url.scheme, "rabbit");
        assert_eq!(
            url.hosts,
            vec![
                host("host1", Some(5672), Some("user"), Some("pass")),
                host("host2", Some(5673), Some("user2"), Some("pass2")),
            ]
        );
        assert_eq!(url.virtual_host.as_deref(), Some("vhost"));
        assert_eq!(url.query, vec![("k".to_owned(), "v".to_owned())]);
    }

    #[test]
    fn devstack_url_has_an_empty_vhost() {
        let url = parse("rabbit://stackrabbit:secret@192.168.1.10:5672/");
        assert_eq!(url.virtual_host.as_deref(), Some(""));
        assert_eq!(url.hosts[0].port, Some(5672));
    }

    #[test]
    fn no_path_means_no_vhost_and_no_netloc_means_no_host() {
        let url = parse("rabbit://");
        assert!(url.hosts.is_empty());
        assert_eq!(url.virtual_host, None);
        assert_eq!(parse("rabbit://h").virtual_host, None);
    }

    #[test]
    fn percent_decodes_user_password_and_vhost_but_not_host() {
        let url = parse("rabbit://us%40er:p%3Aa%2Cs%2Fs@host%41:5672/v%2Fhost");
        let first = &url.hosts[0];
        assert_eq!(first.username.as_deref(), Some("us@er"));
        assert_eq!(first.password.as_ref().map(Secret::expose), Some("p:a,s/s"));
        assert_eq!(first.hostname, "host%41");
        assert_eq!(url.virtual_host.as_deref(), Some("v/host"));
    }

    #[test]
    fn invalid_percent_escapes_stay_literal_like_python() {
        let url = parse("rabbit://u%zz:p%4@h/%ff");
        assert_eq!(url.hosts[0].username.as_deref(), Some("u%zz"));
        assert_eq!(
            url.hosts[0].password.as_ref().map(Secret::expose),
            Some("p%4")
        );
        assert_eq!(url.virtual_host.as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn password_may_contain_colon_and_at_sign() {
        let url = parse("rabbit://user:pa:ss@word@host:5672/");
        assert_eq!(url.hosts[0].username.as_deref(), Some("user"));
        assert_eq!(
            url.hosts[0].password.as_ref().map(Secret::expose),
            Some("pa:ss@word")
        );
        assert_eq!(url.hosts[0].hostname, "host");
    }

    #[test]
    fn user_without_password() {
        let url = parse("rabbit://guest@h");
        assert_eq!(url.hosts[0], host("h", None, Some("guest"), None));
    }

    #[test]
    fn ipv6_literals_in_brackets() {
        let url = parse("rabbit://u:p@[fd00::1]:5672,[::1],[fe80::1%25eth0]:5671/");
        assert_eq!(
            url.hosts[0],
            host("fd00::1", Some(5672), Some("u"), Some("p"))
        );
        assert_eq!(url.hosts[1], host("::1", None, None, None));
        assert_eq!(url.hosts[2].hostname, "fe80::1%25eth0");
    }

    #[test]
    fn a_host_without_credentials_inherits_nothing() {
        let url = parse("rabbit://u:p@a:1,b:2");
        assert_eq!(url.hosts[1], host("b", Some(2), None, None));
    }

    #[test]
    fn empty_host_entries_are_skipped() {
        let url = parse("rabbit://a,,b,/");
        let names: Vec<_> = url.hosts.iter().map(|h| h.hostname.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn empty_port_is_an_error_and_unbracketed_ipv6_has_no_port() {
        assert!(matches!(
            "rabbit://h:/".parse::<TransportUrl>(),
            Err(TransportUrlError::InvalidPort { .. })
        ));
        assert_eq!(
            parse("rabbit://::1/").hosts[0],
            host("::1", None, None, None)
        );
        assert_eq!(
            parse("rabbit://fd00::1:5672/").hosts[0].hostname,
            "fd00::1:5672"
        );
    }

    #[test]
    fn scheme_is_lowercased_and_fragment_dropped() {
        let url = parse("RaBbIt://h/v#frag");
        assert_eq!(url.scheme, "rabbit");
        assert_eq!(url.virtual_host.as_deref(), Some("v"));
    }

    #[test]
    fn leading_whitespace_and_embedded_newlines_are_removed_like_urlsplit() {
        let url = parse("  rabbit://h\n:5672/v");
        assert_eq!(url.hosts[0], host("h", Some(5672), None, None));
    }

    #[test]
    fn query_follows_parse_qs() {
        let url = parse("rabbit://h/?ssl=1&a=x&blank=&noeq&a=y&sp=a+b%2B");
        assert_eq!(
            url.query,
            vec![
                ("ssl".to_owned(), "1".to_owned()),
                ("a".to_owned(), "x,y".to_owned()),
                ("sp".to_owned(), "a b+".to_owned()),
            ]
        );
        assert_eq!(url.query_value("a"), Some("x,y"));
        assert_eq!(url.query_value("blank"), None);
    }

    #[test]
    fn missing_scheme_is_an_error() {
        for bad in ["", "//h:5672/", "1abc://h", ":x", "ra bbit://h"] {
            assert_eq!(
                bad.parse::<TransportUrl>(),
                Err(TransportUrlError::MissingScheme),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_port_names_the_host_and_not_the_password() {
        let err = "rabbit://u:topsecret@h1:5672,u:topsecret@h2:99999/"
            .parse::<TransportUrl>()
            .expect_err("port out of range");
        assert_eq!(
            err,
            TransportUrlError::InvalidPort {
                index: 2,
                hostname: "h2".to_owned(),
                port: "99999".to_owned()
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("h2") && message.contains("99999"),
            "{message}"
        );
        assert!(!message.contains("topsecret"), "{message}");
    }

    #[test]
    fn bracket_errors() {
        let unclosed = "rabbit://u:pw@[::1:5672/".parse::<TransportUrl>();
        assert!(matches!(
            unclosed,
            Err(TransportUrlError::UnbalancedBracket { index: 1, .. })
        ));
        let stray = "rabbit://h]:1".parse::<TransportUrl>();
        assert!(matches!(
            stray,
            Err(TransportUrlError::UnbalancedBracket { .. })
        ));
        let not_v6 = "rabbit://[nothost]:1".parse::<TransportUrl>();
        assert!(matches!(
            not_v6,
            Err(TransportUrlError::InvalidIpv6Literal { .. })
        ));
        let trailing = "rabbit://[::1]x:1".parse::<TransportUrl>();
        assert!(matches!(
            trailing,
            Err(TransportUrlError::TrailingTextAfterIpv6 { .. })
        ));
    }

    #[test]
    fn credentials_without_host_is_an_error() {
        let err = "rabbit://u:p@:5672/"
            .parse::<TransportUrl>()
            .expect_err("no host");
        assert_eq!(err, TransportUrlError::MissingHostname { index: 1 });
    }

    #[test]
    fn display_and_debug_redact_passwords() {
        let url = parse("rabbit://us%40er:topsecret@h1:5672,[fd00::2]:5673/v%2Fh?a=b+c");
        let shown = url.to_string();
        assert_eq!(
            shown,
            "rabbit://us%40er:***@h1:5672,[fd00::2]:5673/v%2Fh?a=b%20c"
        );
        assert!(!format!("{url:?}").contains("topsecret"));
    }

    fn component() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9/:@,%+?#& é-]{0,12}").expect("valid regex")
    }

    fn hostname() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex("[a-z][a-z0-9.-]{0,15}").expect("valid regex"),
            any::<Ipv6Addr>().prop_map(|a| a.to_string()),
        ]
    }

    fn transport_host() -> impl Strategy<Value = TransportHost> {
        (
            hostname(),
            proptest::option::of(any::<u16>()),
            proptest::option::of((component(), proptest::option::of(component()))),
        )
            .prop_map(|(hostname, port, credentials)| {
                let (username, password) = match credentials {
                    Some((user, pass)) => (Some(user), pass.map(Secret::new)),
                    None => (None, None),
                };
                TransportHost {
                    hostname,
                    port,
                    username,
                    password,
                }
            })
    }

    proptest! {
        #[test]
        fn display_then_parse_keeps_everything_but_the_password(
            hosts in proptest::collection::vec(transport_host(), 0..4),
            virtual_host in proptest::option::of(component()),
            query in proptest::collection::vec(
                (
                    proptest::string::string_regex("[a-z_]{1,8}").expect("valid regex"),
                    proptest::string::string_regex("[a-zA-Z0-9 +&=]{1,8}").expect("valid regex"),
                ),
                0..3,
            ),
        ) {
            let mut query_unique: Vec<(String, String)> = Vec::new();
            for (key, value) in query {
                if !query_unique.iter().any(|(existing, _)| *existing == key) {
                    query_unique.push((key, value));
                }
            }
            let url = TransportUrl { scheme: "rabbit".to_owned(), hosts, virtual_host, query: query_unique };
            let reparsed: TransportUrl = url.to_string().parse().expect("own output parses");
            let mut expected = url.clone();
            for host in &mut expected.hosts {
                if host.password.is_some() {
                    host.password = Some(Secret::new(REDACTED));
                }
            }
            prop_assert_eq!(reparsed, expected);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,64}") {
            let _ = text.parse::<TransportUrl>();
        }
    }
}
