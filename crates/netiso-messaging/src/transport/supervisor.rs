//! The connection supervisor: one task that keeps one connection up. It tries the hosts round
//! robin with capped exponential backoff, publishes each new connection as a numbered [`Link`]
//! (its generation), waits for its loss, fails its unconfirmed publishes and starts over.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use amqprs::Close;
use amqprs::callbacks::ConnectionCallback;
use amqprs::connection::Connection;
use async_trait::async_trait;
use tokio::sync::{Mutex, Notify, watch};
use tokio::time::sleep;
use tracing::{debug, info, warn};

use super::AmqpResult;
use super::backoff::Backoff;
use super::broker::{BrokerConfig, HostRotation};
use super::connection::open_connection;
use super::publish::PublishChannel;
use crate::confirm::ConfirmTracker;
use crate::options::RabbitOptions;
use crate::tls::TlsClient;

/// How often a connection that reported nothing is checked for being closed anyway. A loss is
/// normally reported at once (the broker's `Connection.Close`, or amqprs's I/O failure signal
/// when its reader stops, which it also does after two missed broker heartbeats); this poll
/// only bounds the rare cases where neither arrives (the reader stopped before the listener
/// subscribed, or amqprs's writer stopped alone). Long on purpose: an idle agent wakes for it,
/// each time several timer-wheel wake-ups, and a fleet of idle agents pays it a thousand times
/// over (every 500 ms was 120 wake-ups a minute per guest; every 30 s still about 6 of the 36
/// an idle agent had).
const LIVENESS_POLL: Duration = Duration::from_secs(120);

/// State of the supervised connection, as the supervisor publishes it.
#[derive(Clone)]
pub(super) enum LinkState {
    /// No connection: `attempts` failed in a row so far, the last one for `last_error`.
    Connecting { attempts: u32, last_error: String },
    /// A live connection.
    Up(Arc<Link>),
    /// The transport was closed; nothing will connect again.
    Closed,
}

/// One live AMQP connection and its publishing channel.
pub(super) struct Link {
    /// Counts connections: a task that lost its channel waits for a newer one.
    pub(super) generation: u64,
    /// The broker's `user@host:port`, for logs.
    pub(super) broker: String,
    pub(super) connection: Connection,
    pub(super) publisher: Mutex<Option<PublishChannel>>,
    /// The publishing channel's tracker, reachable without the publisher's async lock so that
    /// the supervisor can fail its waiters at once when the connection goes.
    pub(super) publisher_tracker: StdMutex<Option<Arc<StdMutex<ConfirmTracker>>>>,
}

impl Link {
    /// The oldest generation worth waiting for after a failure on this link: this one if its
    /// connection is still open (only a channel was lost), else the next connection.
    pub(super) fn generation_after_failure(&self) -> u64 {
        generation_after_failure(self.generation, self.connection.is_open())
    }
}

/// See [`Link::generation_after_failure`].
pub(super) fn generation_after_failure(generation: u64, connection_open: bool) -> u64 {
    if connection_open {
        generation
    } else {
        generation + 1
    }
}

/// Wakes the supervisor when the broker closes the connection.
struct LossCallback {
    lost: Arc<Notify>,
}

#[async_trait]
impl ConnectionCallback for LossCallback {
    async fn close(&mut self, connection: &Connection, close: Close) -> AmqpResult<()> {
        warn!(connection = %connection, cause = %close, "broker closed the connection");
        self.lost.notify_one();
        Ok(())
    }
    async fn blocked(&mut self, _connection: &Connection, reason: String) {
        warn!(%reason, "broker blocked publishing on this connection");
    }
    async fn unblocked(&mut self, _connection: &Connection) {
        info!("broker unblocked publishing");
    }
    async fn secret_updated(&mut self, _connection: &Connection) {}
}

/// Keeps one connection up: connects round robin with capped exponential backoff, publishes
/// it, waits for its loss, fails its unconfirmed publishes, and starts over.
pub(super) async fn supervise(
    config: BrokerConfig,
    options: RabbitOptions,
    tls: Option<TlsClient>,
    state: watch::Sender<LinkState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rotation = HostRotation::random_start(config.hosts.len());
    let mut attempts: u32 = 0;
    let mut generation: u64 = 0;
    let mut backoff = Backoff::new(options.rabbit_retry_interval, options.rabbit_interval_max);
    while !*shutdown.borrow() {
        let host = &config.hosts[rotation.next_index()];
        let connection = match open_connection(host, &config, &options, tls.as_ref()).await {
            Ok(connection) => connection,
            Err(err) => {
                attempts = attempts.saturating_add(1);
                let delay = backoff.after_failure();
                warn!(broker = ?host, error = %err, attempts, retry_in = ?delay, "cannot connect to broker");
                state.send_replace(LinkState::Connecting {
                    attempts,
                    last_error: format!("{host:?}: {err}"),
                });
                tokio::select! {
                    () = sleep(delay) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                continue;
            }
        };
        attempts = 0;
        backoff.reset();
        generation += 1;
        let lost = Arc::new(Notify::new());
        if let Err(err) = connection
            .register_callback(LossCallback {
                lost: Arc::clone(&lost),
            })
            .await
        {
            warn!(error = %err, "cannot register connection callback");
        }
        let watcher = connection.clone();
        let io_lost = Arc::clone(&lost);
        let io_task = tokio::spawn(async move {
            watcher.listen_network_io_failure().await;
            io_lost.notify_one();
        });
        let link = Arc::new(Link {
            generation,
            broker: format!("{host:?}"),
            connection: connection.clone(),
            publisher: Mutex::new(None),
            publisher_tracker: StdMutex::new(None),
        });
        info!(broker = ?host, vhost = %config.virtual_host, generation, tls = tls.is_some(), "connected to broker");
        state.send_replace(LinkState::Up(Arc::clone(&link)));
        let shutting_down = loop {
            tokio::select! {
                () = lost.notified() => break false,
                () = sleep(LIVENESS_POLL) => if !connection.is_open() { break false },
                _ = shutdown.wait_for(|s| *s) => break true,
            }
        };
        io_task.abort();
        if shutting_down {
            state.send_replace(LinkState::Closed);
            link.fail_publishes("transport closed");
            if let Err(err) = connection.close().await {
                debug!(error = %err, "closing the connection failed");
            }
            return;
        }
        state.send_replace(LinkState::Connecting {
            attempts: 0,
            last_error: format!("connection to {host:?} lost"),
        });
        link.fail_publishes("connection to broker lost");
        warn!(broker = ?host, "connection to broker lost, reconnecting");
        tokio::select! {
            () = sleep(backoff.current()) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    state.send_replace(LinkState::Closed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::broker::BrokerHost;

    #[test]
    fn a_lost_channel_waits_for_the_same_connection_a_lost_connection_for_the_next() {
        assert_eq!(generation_after_failure(4, true), 4);
        assert_eq!(generation_after_failure(4, false), 5);
    }

    /// Loopback hosts nothing listens on (distinct ports): connecting is refused at once.
    fn dead_hosts(count: usize) -> BrokerConfig {
        let listeners: Vec<_> = (0..count)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind"))
            .collect();
        let hosts = listeners
            .iter()
            .map(|listener| BrokerHost {
                hostname: "127.0.0.1".into(),
                port: listener.local_addr().expect("bound address").port(),
                username: "guest".into(),
                password: "s3cr3t-pw".into(),
            })
            .collect();
        BrokerConfig {
            hosts,
            virtual_host: "/".into(),
        }
    }

    fn fast_retries() -> RabbitOptions {
        RabbitOptions {
            rabbit_retry_interval: Duration::from_millis(5),
            rabbit_interval_max: Duration::from_millis(20),
            ..RabbitOptions::default()
        }
    }

    #[tokio::test]
    async fn failed_attempts_are_counted_named_and_end_in_closed_on_shutdown() {
        let config = dead_hosts(2);
        let ports: Vec<_> = config.hosts.iter().map(|h| h.port).collect();
        let (state_tx, mut state_rx) = watch::channel(LinkState::Connecting {
            attempts: 0,
            last_error: "not connected yet".into(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            config,
            fast_retries(),
            None,
            state_tx,
            shutdown_rx,
        ));
        // Updates may be coalesced, so each one seen is checked on its own: attempt n went to
        // host (start + n - 1) mod 2 for one start, and both hosts get their turn.
        let mut first_host_of_attempt_one = None;
        let mut seen = [false, false];
        let mut last_attempts = 0;
        while !(seen[0] && seen[1] && last_attempts >= 4) {
            state_rx.changed().await.expect("supervisor running");
            let LinkState::Connecting {
                attempts,
                last_error,
            } = &*state_rx.borrow_and_update()
            else {
                panic!("nothing listens, so nothing connects");
            };
            assert!(*attempts > last_attempts, "attempts only grow");
            last_attempts = *attempts;
            assert!(!last_error.contains("s3cr3t-pw"), "{last_error}");
            let host = ports
                .iter()
                .position(|port| last_error.contains(&format!("@127.0.0.1:{port}:")))
                .unwrap_or_else(|| panic!("the error names its host: {last_error}"));
            seen[host] = true;
            let attempt_index = usize::try_from(*attempts - 1).expect("small count");
            let start = (host + 2 - attempt_index % 2) % 2;
            assert_eq!(
                *first_host_of_attempt_one.get_or_insert(start),
                start,
                "round robin"
            );
        }
        shutdown_tx.send_replace(true);
        task.await.expect("supervisor ends");
        assert!(matches!(&*state_rx.borrow(), LinkState::Closed));
    }
}
