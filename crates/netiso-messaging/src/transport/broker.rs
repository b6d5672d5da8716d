//! Where the brokers are: the hosts, credentials and virtual host of a `transport_url`, and the
//! order in which the supervisor tries the hosts.

use std::fmt;

use netiso_config::TransportUrl;

use crate::error::TransportError;

/// kombu's port when the URL names none. oslo.messaging writes it into the URL it gives kombu,
/// so it is 5672 with `ssl` on too (not kombu's TLS default, 5671).
pub(super) const DEFAULT_PORT: u16 = 5672;

/// One broker to try.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerHost {
    /// Host name or address.
    pub hostname: String,
    /// AMQP port.
    pub port: u16,
    /// Login.
    pub username: String,
    /// Password (never printed).
    pub password: String,
}

impl fmt::Debug for BrokerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.username, self.hostname, self.port)
    }
}

/// Where the brokers are: the connection-relevant part of a `transport_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Brokers, tried round robin from a random start (oslo shuffles them).
    pub hosts: Vec<BrokerHost>,
    /// Virtual host.
    pub virtual_host: String,
}

impl BrokerConfig {
    /// Takes hosts, credentials and virtual host from a parsed `transport_url`, with oslo's
    /// defaults (port 5672 even over TLS, `guest`/`guest`, vhost `/`).
    pub fn from_transport_url(url: &TransportUrl) -> Result<Self, TransportError> {
        if !matches!(url.scheme.as_str(), "rabbit" | "amqp") {
            return Err(TransportError::Config(format!(
                "transport_url scheme {:?} is not supported (expected rabbit://)",
                url.scheme
            )));
        }
        if url.hosts.is_empty() {
            return Err(TransportError::Config("transport_url names no host".into()));
        }
        let hosts = url
            .hosts
            .iter()
            .map(|host| BrokerHost {
                hostname: host.hostname.clone(),
                port: host.port.unwrap_or(DEFAULT_PORT),
                username: host.username.clone().unwrap_or_else(|| "guest".into()),
                password: host
                    .password
                    .as_ref()
                    .map_or_else(|| "guest".into(), |p| p.expose().to_owned()),
            })
            .collect();
        let virtual_host = match url.virtual_host.as_deref() {
            None | Some("") => "/".to_owned(),
            Some(vhost) => vhost.to_owned(),
        };
        Ok(Self {
            hosts,
            virtual_host,
        })
    }
}

/// The order in which hosts are tried: round robin from a start chosen at random, so that a
/// fleet of guests spreads over the brokers as oslo's shuffle does.
#[derive(Debug)]
pub(super) struct HostRotation {
    next: usize,
    hosts: usize,
}

impl HostRotation {
    /// A rotation over `hosts` hosts (at least one) starting at a random one.
    pub(super) fn random_start(hosts: usize) -> Self {
        let start = usize::try_from(getrandom::u32().unwrap_or(0)).unwrap_or(0);
        Self::starting_at(start, hosts)
    }

    /// A rotation over `hosts` hosts (at least one) starting at `start` modulo their number.
    pub(super) fn starting_at(start: usize, hosts: usize) -> Self {
        let hosts = hosts.max(1);
        Self {
            next: start % hosts,
            hosts,
        }
    }

    /// The index of the host to try now; the following call gives the next one.
    pub(super) fn next_index(&mut self) -> usize {
        let index = self.next;
        self.next = (self.next + 1) % self.hosts;
        index
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn config(url: &str) -> Result<BrokerConfig, TransportError> {
        let url = TransportUrl::from_str(url).expect("test URL parses");
        BrokerConfig::from_transport_url(&url)
    }

    #[test]
    fn url_hosts_keep_their_order_credentials_and_ports() {
        let config = config("rabbit://alice:pw1@10.0.0.1:5673,bob:pw2@broker.example/trove")
            .expect("valid URL");
        assert_eq!(config.virtual_host, "trove");
        let hosts: Vec<_> = config
            .hosts
            .iter()
            .map(|h| {
                (
                    h.hostname.as_str(),
                    h.port,
                    h.username.as_str(),
                    h.password.as_str(),
                )
            })
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("10.0.0.1", 5673, "alice", "pw1"),
                ("broker.example", DEFAULT_PORT, "bob", "pw2"),
            ]
        );
    }

    #[test]
    fn oslo_defaults_fill_what_the_url_leaves_out() {
        for url in [
            "rabbit://10.0.0.2",
            "amqp://10.0.0.2/",
            "rabbit://10.0.0.2:5671",
        ] {
            let config = config(url).expect("valid URL");
            assert_eq!(config.virtual_host, "/", "{url}");
            let host = &config.hosts[0];
            assert_eq!(
                (host.username.as_str(), host.password.as_str()),
                ("guest", "guest")
            );
        }
        assert_eq!(config("rabbit://10.0.0.2").unwrap().hosts[0].port, 5672);
        assert_eq!(
            config("rabbit://10.0.0.2:5671").unwrap().hosts[0].port,
            5671
        );
    }

    #[test]
    fn other_schemes_and_hostless_urls_are_refused() {
        let err = config("kafka://10.0.0.2:9092/").unwrap_err();
        assert!(
            matches!(&err, TransportError::Config(text) if text.contains("\"kafka\"")),
            "{err}"
        );
        let err = config("rabbit:///trove").unwrap_err();
        assert!(
            matches!(&err, TransportError::Config(text) if text.contains("no host")),
            "{err}"
        );
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let config = config("rabbit://alice:s3cr3t-pw@10.0.0.1:5672/").expect("valid URL");
        let printed = format!("{:?} {:?}", config, config.hosts[0]);
        assert!(!printed.contains("s3cr3t-pw"), "{printed}");
        assert!(printed.contains("alice@10.0.0.1:5672"), "{printed}");
    }

    #[test]
    fn rotation_is_round_robin_from_its_start() {
        let mut rotation = HostRotation::starting_at(2, 3);
        let order: Vec<_> = (0..7).map(|_| rotation.next_index()).collect();
        assert_eq!(order, vec![2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn rotation_start_wraps_and_one_host_is_always_chosen() {
        let mut rotation = HostRotation::starting_at(usize::MAX, 4);
        assert_eq!(rotation.next_index(), usize::MAX % 4);
        let mut single = HostRotation::random_start(1);
        assert!((0..5).all(|_| single.next_index() == 0));
    }

    #[test]
    fn random_starts_stay_within_the_hosts() {
        for _ in 0..64 {
            let mut rotation = HostRotation::random_start(3);
            let first = rotation.next_index();
            assert!(first < 3);
            assert_eq!(rotation.next_index(), (first + 1) % 3);
        }
    }
}
