//! The harness as Trove's control plane: it calls and casts to the guest as the
//! taskmanager does (`guestagent.<id>`, Trove's encrypted serializer) and serves the
//! conductor queue, recording every heartbeat and notification the guest sends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use netiso_config::TransportUrl;
use netiso_messaging::{
    Args, BrokerConfig, Context, Dispatcher, HandlerError, InstanceKey, RabbitOptions, RpcClient,
    RpcServer, Serializer, ServerConfig, Target, Transport,
};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::settings::Broker;
use crate::sql::TenantLogin;

/// What the guest told the conductor.
#[derive(Debug, Clone, PartialEq)]
pub enum ConductorEvent {
    /// `heartbeat` with `payload.service_status`.
    Heartbeat(String),
    /// `notify_end`.
    NotifyEnd,
    /// `notify_exc_info` with its message.
    NotifyExcInfo(String),
}

#[derive(Default)]
struct Recorded {
    events: Mutex<Vec<(Instant, ConductorEvent)>>,
    arrived: Notify,
}

impl Recorded {
    fn push(&self, event: ConductorEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((Instant::now(), event));
        self.arrived.notify_waiters();
    }
}

/// Trove's controller and conductor for one guest.
pub struct Controller {
    transport: Transport,
    client: RpcClient,
    target: Target,
    recorded: Arc<Recorded>,
    server: Option<RpcServer>,
}

impl Controller {
    /// Connects to the broker (host loopback) and starts serving the conductor queue.
    pub async fn start(
        broker: &Broker,
        exchange: &str,
        conductor_queue: &str,
        guest_id: &str,
        key: &str,
    ) -> Result<Self> {
        let url: TransportUrl = broker
            .controller_url()
            .parse()
            .map_err(|e| anyhow!("transport URL: {e}"))?;
        let config = BrokerConfig::from_transport_url(&url)?;
        let mut options = RabbitOptions::default();
        options.rabbit_quorum_queue = broker.quorum_queues;
        let transport = Transport::connect(config, options, Duration::from_secs(15))
            .await
            .with_context(|| {
                format!(
                    "connecting to RabbitMQ at {}: run `cargo xtask provision`",
                    broker.controller_hosts.join(", ")
                )
            })?;
        let key = InstanceKey::new(key).map_err(|e| anyhow!("instance key: {e}"))?;
        let client = RpcClient::new(&transport, exchange, Serializer::Secure(key.clone()));
        let recorded = Arc::new(Recorded::default());
        let mut dispatcher = Dispatcher::new("1.0")?;
        for method in ["heartbeat", "notify_end", "notify_exc_info"] {
            let recorded = Arc::clone(&recorded);
            dispatcher.register(method, move |_: Context, args: Args| {
                let recorded = Arc::clone(&recorded);
                async move {
                    recorded.push(conductor_event(method, &args.into_map()));
                    Ok::<Value, HandlerError>(Value::Null)
                }
            });
        }
        let server = RpcServer::start(
            &transport,
            ServerConfig::new(
                exchange.to_owned(),
                Target {
                    topic: conductor_queue.to_owned(),
                    server: None,
                    version: "1.0".to_owned(),
                },
                Serializer::Conductor {
                    key,
                    instance_id: guest_id.to_owned(),
                },
            )
            .with_max_concurrency(4),
            dispatcher,
        )
        .await
        .context("serving the conductor queue")?;
        Ok(Self {
            transport,
            client,
            target: Target::guest_agent(guest_id),
            recorded,
            server: Some(server),
        })
    }

    /// Calls a guest method and returns its result.
    pub async fn call(&self, method: &str, args: Value, timeout: Duration) -> Result<Value> {
        let args = match args {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self.client
            .call(&self.target, method, args, &request_context(), timeout)
            .await
            .with_context(|| format!("calling {method}"))
    }

    /// Casts a guest method.
    pub async fn cast(&self, method: &str, args: Value) -> Result<()> {
        let args = match args {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self.client
            .cast(&self.target, method, args, &request_context())
            .await
            .with_context(|| format!("{method} (cast)"))
    }

    /// `rpc_ping` until it answers `true` or `limit` passes; the last error otherwise.
    pub async fn ping_until_answered(&self, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut last = anyhow!("no attempt");
        while started.elapsed() < limit {
            match self
                .call("rpc_ping", json!({}), Duration::from_secs(3))
                .await
            {
                Ok(Value::Bool(true)) => return Ok(started.elapsed()),
                Ok(other) => last = anyhow!("rpc_ping answered {other}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.context(format!("rpc_ping unanswered for {limit:?}")))
    }

    /// How many conductor events arrived so far (a mark for [`Self::wait_event`]).
    pub fn mark(&self) -> usize {
        self.recorded
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Events since `mark`.
    pub fn events_since(&self, mark: usize) -> Vec<ConductorEvent> {
        let events = self
            .recorded
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        events.iter().skip(mark).map(|(_, e)| e.clone()).collect()
    }

    /// Waits until an event after `mark` satisfies `wanted`, at most `limit`.
    pub async fn wait_event(
        &self,
        mark: usize,
        limit: Duration,
        wanted: impl Fn(&ConductorEvent) -> bool,
    ) -> Result<ConductorEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.recorded.arrived.notified();
            if let Some(event) = self.events_since(mark).into_iter().find(|e| wanted(e)) {
                return Ok(event);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(anyhow!(
                    "not seen within {limit:?}; the conductor got {:?}",
                    self.events_since(mark)
                ));
            }
        }
    }

    /// Stops serving and closes the connection.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.transport.close();
    }
}

fn conductor_event(method: &str, args: &Map<String, Value>) -> ConductorEvent {
    match method {
        "heartbeat" => ConductorEvent::Heartbeat(
            args.get("payload")
                .and_then(|p| p.get("service_status"))
                .and_then(Value::as_str)
                .unwrap_or("<no service_status>")
                .to_owned(),
        ),
        "notify_end" => ConductorEvent::NotifyEnd,
        _ => ConductorEvent::NotifyExcInfo(
            args.get("message")
                .and_then(Value::as_str)
                .unwrap_or("<no message>")
                .to_owned(),
        ),
    }
}

/// A request context as Trove's API sends it, with the notification the guest echoes back:
/// `SerializableNotification.serialize` adds the class's dotted name, which Trove's own agent
/// imports to rebuild the notification (without it, every call fails there with
/// `KeyError: 'notification_classname'`).
fn request_context() -> Context {
    let mut context = Context::fresh();
    context.0.insert(
        "trove_notification".into(),
        json!({
            "server_type": "api", "request_id": "req-netiso-harness", "tenant_id": "netiso-harness",
            "client_ip": "10.254.0.1", "server_ip": "10.254.0.1",
            "notification_classname": "trove.common.notification.DBaaSInstanceCreate",
        }),
    );
    context
}

/// Trove's `prepare` arguments for a MariaDB instance: the tenant's database and user,
/// `config_contents` as the taskmanager renders it, no volume device (the data folder is a
/// plain directory), a root password for the guest to generate.
pub fn prepare_args(
    ds_version: &str,
    mount_point: &str,
    login: &TenantLogin,
    config_contents: &str,
) -> Value {
    json!({
        "packages": [], "databases": login.prepare_databases(), "memory_mb": 512,
        "users": login.prepare_users(), "device_path": null, "mount_point": mount_point,
        "backup_info": null, "config_contents": config_contents, "root_password": null,
        "overrides": {}, "cluster_config": null, "snapshot": null, "modules": null,
        "ds_version": ds_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conductor_events_are_read_from_the_arguments() {
        let args = json!({"payload": {"service_status": "healthy"}});
        let args = args.as_object().cloned().unwrap_or_default();
        assert_eq!(
            conductor_event("heartbeat", &args),
            ConductorEvent::Heartbeat("healthy".into())
        );
        let args = json!({"message": "failed to spawn"});
        let args = args.as_object().cloned().unwrap_or_default();
        assert_eq!(
            conductor_event("notify_exc_info", &args),
            ConductorEvent::NotifyExcInfo("failed to spawn".into())
        );
    }
}
