//! The AMQP transport: one supervised connection with failover over the `transport_url`
//! hosts, capped exponential reconnection backoff, publishing with broker confirms, and
//! consumers that re-declare and resume by themselves after a reconnection.
//!
//! One concern per module: `broker` (where the brokers are, the order hosts are tried),
//! `backoff` (the reconnection delays), `connection` (opening one connection, TLS
//! included), `supervisor` (keeping one connection up and numbering its generations),
//! `channel` (channels that remember why the broker closed them), `declare` (exchanges,
//! queues, bindings), `publish` (confirmed publishing and its retries) and `consume`
//! (consumers that re-subscribe). This module holds the [`Transport`] handle and the wait for
//! a live connection.

mod backoff;
mod broker;
mod channel;
mod connection;
mod consume;
mod declare;
mod publish;
mod supervisor;

use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use tracing::warn;

pub use broker::{BrokerConfig, BrokerHost};
pub use consume::{Consumer, DEFAULT_PREFETCH, Delivery};
pub use publish::Outgoing;

use crate::error::TransportError;
use crate::options::RabbitOptions;
use crate::tls::TlsClient;
use broker::DEFAULT_PORT;
use supervisor::{Link, LinkState, supervise};

/// What amqprs's callbacks return.
type AmqpResult<T> = Result<T, amqprs::error::Error>;

/// Locks a mutex shared with amqprs callbacks, ignoring poisoning: a panic in one callback
/// must not turn every later publish or close into a second panic.
fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every clone of a [`Transport`] shares; the last one dropped stops the supervisor.
struct Shared {
    config: BrokerConfig,
    options: RabbitOptions,
    state: watch::Receiver<LinkState>,
    shutdown: watch::Sender<bool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// A supervised connection to the broker, shared by servers and clients (cheap to clone).
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("hosts", &self.shared.config.hosts)
            .field("virtual_host", &self.shared.config.virtual_host)
            .finish()
    }
}

impl Transport {
    /// Starts the connection supervisor and waits (up to `wait`) for the first connection.
    pub async fn connect(
        config: BrokerConfig,
        options: RabbitOptions,
        wait: Duration,
    ) -> Result<Self, TransportError> {
        let transport = Self::start(config, options)?;
        transport.link(Instant::now() + wait, 0).await?;
        Ok(transport)
    }

    /// Starts the connection supervisor without waiting; operations wait for a connection.
    ///
    /// With `ssl` on, the TLS files are loaded here: a setting that cannot be honoured is
    /// [`TransportError::Tls`], never a plaintext connection.
    pub fn start(config: BrokerConfig, options: RabbitOptions) -> Result<Self, TransportError> {
        options.validate()?;
        if config.hosts.is_empty() {
            return Err(TransportError::Config("no broker host configured".into()));
        }
        let tls = TlsClient::new(&options.tls)?;
        if tls.is_some() && config.hosts.iter().any(|h| h.port == DEFAULT_PORT) {
            warn!(
                "ssl is on and a broker port is {DEFAULT_PORT} (oslo's port when transport_url \
                 names none): RabbitMQ's TLS listener is usually on 5671"
            );
        }
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting {
            attempts: 0,
            last_error: "not connected yet".into(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        tokio::spawn(supervise(
            config.clone(),
            options.clone(),
            tls,
            state_tx,
            shutdown_rx,
        ));
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                options,
                state: state_rx,
                shutdown: shutdown_tx,
            }),
        })
    }

    /// The options this transport declares with.
    pub fn options(&self) -> &RabbitOptions {
        &self.shared.options
    }

    /// Closes the connection; later operations fail with [`TransportError::Closed`].
    pub fn close(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.shared.state.borrow(), LinkState::Up(link) if link.connection.is_open())
    }

    /// Waits for a live connection whose generation is at least `min_generation`.
    async fn link(
        &self,
        deadline: Instant,
        min_generation: u64,
    ) -> Result<Arc<Link>, TransportError> {
        let mut state = self.shared.state.clone();
        loop {
            let unreachable = match &*state.borrow_and_update() {
                LinkState::Up(link) if link.generation >= min_generation => {
                    return Ok(Arc::clone(link));
                }
                LinkState::Closed => return Err(TransportError::Closed),
                LinkState::Up(_) => TransportError::Unreachable {
                    attempts: 0,
                    last_error: "waiting for a reconnection".into(),
                },
                LinkState::Connecting {
                    attempts,
                    last_error,
                } => TransportError::Unreachable {
                    attempts: *attempts,
                    last_error: last_error.clone(),
                },
            };
            match timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(TransportError::Closed),
                Err(_) => return Err(unreachable),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport whose connection state the test sets, with no supervisor behind it.
    fn transport_with_state(initial: LinkState) -> (Transport, watch::Sender<LinkState>) {
        let (state_tx, state_rx) = watch::channel(initial);
        let (shutdown, _) = watch::channel(false);
        let transport = Transport {
            shared: Arc::new(Shared {
                config: BrokerConfig {
                    hosts: Vec::new(),
                    virtual_host: "/".into(),
                },
                options: RabbitOptions::default(),
                state: state_rx,
                shutdown,
            }),
        };
        (transport, state_tx)
    }

    fn connecting(attempts: u32, last_error: &str) -> LinkState {
        LinkState::Connecting {
            attempts,
            last_error: last_error.into(),
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(20)
    }

    #[tokio::test]
    async fn waiting_past_the_deadline_reports_the_last_attempt() {
        let (transport, _state) =
            transport_with_state(connecting(3, "guest@10.0.0.1:5672: refused"));
        let err = transport.link(soon(), 0).await.err().expect("no link");
        assert!(
            matches!(&err, TransportError::Unreachable { attempts: 3, last_error }
                if last_error == "guest@10.0.0.1:5672: refused"),
            "{err}"
        );
        assert!(!transport.is_connected());
    }

    #[tokio::test]
    async fn the_state_seen_last_before_the_deadline_is_reported() {
        let (transport, state) = transport_with_state(connecting(0, "not connected yet"));
        let waiting = tokio::spawn(async move { transport.link(soon(), 0).await.err() });
        state.send_replace(connecting(1, "guest@10.0.0.2:5672: timed out"));
        let err = waiting.await.expect("task").expect("no link");
        assert!(
            matches!(&err, TransportError::Unreachable { attempts: 1, last_error }
                if last_error.contains("10.0.0.2")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_closed_transport_fails_at_once() {
        let (transport, state) = transport_with_state(connecting(0, "not connected yet"));
        let far = Instant::now() + Duration::from_secs(3600);
        let waiting = tokio::spawn({
            let transport = transport.clone();
            async move { transport.link(far, 0).await.err() }
        });
        state.send_replace(LinkState::Closed);
        assert!(matches!(
            waiting.await.expect("task"),
            Some(TransportError::Closed)
        ));
        assert!(matches!(
            transport.link(far, 0).await.err(),
            Some(TransportError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_supervisor_gone_means_closed() {
        let (transport, state) = transport_with_state(connecting(0, "not connected yet"));
        drop(state);
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(matches!(
            transport.link(far, 0).await.err(),
            Some(TransportError::Closed)
        ));
    }

    #[test]
    fn start_refuses_bad_options_and_no_hosts_before_connecting() {
        let options = RabbitOptions {
            rabbit_retry_interval: Duration::ZERO,
            ..RabbitOptions::default()
        };
        let config = BrokerConfig {
            hosts: vec![BrokerHost {
                hostname: "127.0.0.1".into(),
                port: 5672,
                username: "guest".into(),
                password: "guest".into(),
            }],
            virtual_host: "/".into(),
        };
        assert!(matches!(
            Transport::start(config.clone(), options),
            Err(TransportError::Options(_))
        ));
        let no_hosts = BrokerConfig {
            hosts: Vec::new(),
            ..config
        };
        assert!(matches!(
            Transport::start(no_hosts, RabbitOptions::default()),
            Err(TransportError::Config(text)) if text.contains("no broker host")
        ));
    }

    #[test]
    fn debug_output_names_hosts_without_passwords() {
        let (mut transport, _state) = transport_with_state(connecting(0, "not connected yet"));
        let shared = Arc::get_mut(&mut transport.shared).expect("sole owner");
        shared.config.hosts.push(BrokerHost {
            hostname: "10.0.0.9".into(),
            port: 5671,
            username: "trove".into(),
            password: "s3cr3t-pw".into(),
        });
        let printed = format!("{transport:?}");
        assert!(printed.contains("trove@10.0.0.9:5671"), "{printed}");
        assert!(!printed.contains("s3cr3t-pw"), "{printed}");
    }
}
