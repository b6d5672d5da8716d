//! Opening one AMQP connection to one broker: the connection arguments taken from the broker
//! configuration and the options, TLS when `ssl` is on, a bounded wait, and a failure message
//! that says why (a TLS refusal names its reason; the password never appears).

use std::time::Duration;

use amqprs::connection::{Connection, OpenConnectionArguments};
use tokio::time::timeout;

use super::broker::{BrokerConfig, BrokerHost};
use crate::options::RabbitOptions;
use crate::tls::TlsClient;

/// How long one attempt (TCP, TLS handshake, AMQP open) may take before the next host is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens one connection, over TLS when configured: the certificate must name `host`.
///
/// The error is text for the supervisor's log and for [`crate::TransportError::Unreachable`];
/// it names what failed, never the credentials.
pub(super) async fn open_connection(
    host: &BrokerHost,
    config: &BrokerConfig,
    options: &RabbitOptions,
    tls: Option<&TlsClient>,
) -> Result<Connection, String> {
    let mut args = connection_arguments(host, config, options);
    if let Some(tls) = tls {
        args.tls_adaptor(tls.adaptor(&host.hostname));
    }
    let failed =
        |err: String| describe_failure(err, tls.is_some(), tls.and_then(TlsClient::take_failure));
    match timeout(CONNECT_TIMEOUT, Connection::open(&args)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(err)) => Err(failed(err.to_string())),
        Err(_) => Err(failed(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// The plaintext connection arguments: host, port, login, virtual host, the negotiated
/// heartbeat (`heartbeat_timeout_threshold`) and a name that tells connections apart in
/// RabbitMQ's management views.
fn connection_arguments(
    host: &BrokerHost,
    config: &BrokerConfig,
    options: &RabbitOptions,
) -> OpenConnectionArguments {
    OpenConnectionArguments::new(&host.hostname, host.port, &host.username, &host.password)
        .virtual_host(&config.virtual_host)
        .heartbeat(options.heartbeat_timeout_threshold)
        .connection_name(&connection_name())
        .finish()
}

/// Why an attempt failed: over TLS, the verifier's reason when it refused the broker's
/// certificate (amqprs passes handshake errors on as text only), else the error marked as a
/// TLS attempt; in plaintext, the error as it is.
fn describe_failure(error: String, over_tls: bool, handshake_refusal: Option<String>) -> String {
    match (over_tls, handshake_refusal) {
        (true, Some(reason)) => format!("TLS handshake failed: {reason}"),
        (true, None) => format!("{error} (connecting over TLS)"),
        (false, _) => error,
    }
}

/// `program:pid:uuid`, like oslo's connection names, so that the broker's connection list
/// shows which process holds which connection.
fn connection_name() -> String {
    let program = std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "netiso".into());
    format!("{program}:{}:{}", std::process::id(), uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> BrokerHost {
        BrokerHost {
            hostname: "10.0.0.7".into(),
            port: 5671,
            username: "trove".into(),
            password: "s3cr3t-pw".into(),
        }
    }

    #[test]
    fn arguments_carry_host_vhost_and_heartbeat() {
        let config = BrokerConfig {
            hosts: vec![host()],
            virtual_host: "trove-vhost".into(),
        };
        let options = RabbitOptions {
            heartbeat_timeout_threshold: 17,
            ..RabbitOptions::default()
        };
        let args = connection_arguments(&config.hosts[0], &config, &options);
        assert_eq!(args.get_host(), "10.0.0.7");
        assert_eq!(args.get_port(), 5671);
        assert_eq!(args.get_virtual_host(), "trove-vhost");
        assert_eq!(args.get_heartbeat(), 17);
        assert!(args.get_tls_adaptor().is_none());
        assert!(args.get_connection_name().is_some());
    }

    #[test]
    fn connection_names_are_program_pid_and_a_fresh_uuid() {
        let first = connection_name();
        let parts: Vec<_> = first.split(':').collect();
        assert_eq!(parts.len(), 3, "{first}");
        assert!(!parts[0].is_empty());
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[2].len(), 36, "a hyphenated uuid: {first}");
        assert_ne!(first, connection_name());
    }

    #[test]
    fn failures_say_whether_and_why_tls_refused() {
        assert_eq!(
            describe_failure("connection refused".into(), false, None),
            "connection refused"
        );
        assert_eq!(
            describe_failure("connection reset".into(), true, None),
            "connection reset (connecting over TLS)"
        );
        assert_eq!(
            describe_failure(
                "handshake error".into(),
                true,
                Some("certificate expired".into())
            ),
            "TLS handshake failed: certificate expired"
        );
    }

    #[tokio::test]
    async fn a_closed_loopback_port_fails_without_naming_the_password() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
        let port = listener.local_addr().expect("bound address").port();
        drop(listener);
        let host = BrokerHost {
            hostname: "127.0.0.1".into(),
            port,
            ..host()
        };
        let config = BrokerConfig {
            hosts: vec![host.clone()],
            virtual_host: "/".into(),
        };
        let Err(err) = open_connection(&host, &config, &RabbitOptions::default(), None).await
        else {
            panic!("nothing listens on the port");
        };
        assert!(!err.is_empty());
        assert!(!err.contains("s3cr3t-pw"), "{err}");
    }
}
