//! The guest's casts to Trove's conductor (`heartbeat`, `update_backup`, `report_root`,
//! `notify_end`, `notify_exc_info`) with
//! the conductor wrapping of the instance key and id.

use std::str::FromStr;
use std::sync::Mutex as StdMutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::client::RpcClient;
use crate::crypto::InstanceKey;
use crate::error::CallError;
use crate::serializer::{Context, Serializer};
use crate::topology::Target;
use crate::transport::Transport;

/// Default `conductor_queue`.
pub const CONDUCTOR_TOPIC: &str = "trove-conductor";
const CONDUCTOR_VERSION: &str = "1.0";

/// The `service_status` descriptions Trove's conductor understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    /// `running`
    Running,
    /// `blocked`
    Blocked,
    /// `paused`
    Paused,
    /// `shutdown`
    Shutdown,
    /// `deleted`
    Deleted,
    /// `crashed`
    Crashed,
    /// `failed to spawn`
    FailedToSpawn,
    /// `building`
    Building,
    /// `promoting replica`
    PromotingReplica,
    /// `ejecting replica source`
    EjectingReplicaSource,
    /// `transferring guest logs`
    TransferringGuestLogs,
    /// `unknown`
    Unknown,
    /// `new`
    New,
    /// `guestagent error`
    GuestagentError,
    /// `instance ready`
    InstanceReady,
    /// `restart required`
    RestartRequired,
    /// `healthy`
    Healthy,
    /// `restarting`
    Restarting,
}

const ALL_STATUSES: [ServiceStatus; 18] = [
    ServiceStatus::Running,
    ServiceStatus::Blocked,
    ServiceStatus::Paused,
    ServiceStatus::Shutdown,
    ServiceStatus::Deleted,
    ServiceStatus::Crashed,
    ServiceStatus::FailedToSpawn,
    ServiceStatus::Building,
    ServiceStatus::PromotingReplica,
    ServiceStatus::EjectingReplicaSource,
    ServiceStatus::TransferringGuestLogs,
    ServiceStatus::Unknown,
    ServiceStatus::New,
    ServiceStatus::GuestagentError,
    ServiceStatus::InstanceReady,
    ServiceStatus::RestartRequired,
    ServiceStatus::Healthy,
    ServiceStatus::Restarting,
];

impl ServiceStatus {
    /// The description sent as `payload.service_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
            Self::Shutdown => "shutdown",
            Self::Deleted => "deleted",
            Self::Crashed => "crashed",
            Self::FailedToSpawn => "failed to spawn",
            Self::Building => "building",
            Self::PromotingReplica => "promoting replica",
            Self::EjectingReplicaSource => "ejecting replica source",
            Self::TransferringGuestLogs => "transferring guest logs",
            Self::Unknown => "unknown",
            Self::New => "new",
            Self::GuestagentError => "guestagent error",
            Self::InstanceReady => "instance ready",
            Self::RestartRequired => "restart required",
            Self::Healthy => "healthy",
            Self::Restarting => "restarting",
        }
    }
}

impl FromStr for ServiceStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ALL_STATUSES
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not a Trove service status"))
    }
}

/// Casts to the conductor on behalf of one guest instance.
pub struct ConductorClient {
    client: RpcClient,
    target: Target,
    instance_id: String,
    last_sent: StdMutex<f64>,
}

impl ConductorClient {
    /// A client for `instance_id`; with a key, values are wrapped and encrypted as Trove's
    /// `ConductorGuestSerializer` does, without one they travel in clear.
    pub fn new(
        transport: &Transport,
        exchange: &str,
        topic: &str,
        instance_id: &str,
        key: Option<InstanceKey>,
    ) -> Self {
        let serializer = match key {
            Some(key) => Serializer::Conductor {
                key,
                instance_id: instance_id.to_owned(),
            },
            None => Serializer::Plain,
        };
        Self {
            client: RpcClient::new(transport, exchange, serializer),
            target: Target {
                topic: topic.to_owned(),
                server: None,
                version: CONDUCTOR_VERSION.into(),
            },
            instance_id: instance_id.to_owned(),
            last_sent: StdMutex::new(0.0),
        }
    }

    /// Epoch seconds with microseconds, strictly greater than any previous value (the
    /// conductor drops a heartbeat whose `sent` is not newer than the last one).
    fn next_sent(&self) -> f64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut last = self
            .last_sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut micros = now;
        let last_micros = (*last * 1e6).round() as u128;
        if micros <= last_micros {
            micros = last_micros + 1;
        }
        let sent = micros as f64 / 1e6;
        *last = sent;
        sent
    }

    /// Reports the database status with a fresh context.
    pub async fn heartbeat(&self, status: ServiceStatus) -> Result<(), CallError> {
        let mut payload = Map::new();
        payload.insert("service_status".into(), Value::from(status.as_str()));
        let mut args = Map::new();
        args.insert("instance_id".into(), Value::from(self.instance_id.clone()));
        args.insert("sent".into(), Value::from(self.next_sent()));
        args.insert("payload".into(), Value::Object(payload));
        self.client
            .cast(&self.target, "heartbeat", args, &Context::fresh())
            .await
    }

    /// Reports a backup's progress: `fields` are flattened into the arguments (`size`,
    /// `state`, `backup_type`, `checksum`, `location`, `success`, ...), as the Python guest does.
    pub async fn update_backup(
        &self,
        context: &Context,
        backup_id: &str,
        fields: Map<String, Value>,
    ) -> Result<(), CallError> {
        let mut args = Map::new();
        args.insert("instance_id".into(), Value::from(self.instance_id.clone()));
        args.insert("backup_id".into(), Value::from(backup_id));
        args.insert("sent".into(), Value::from(self.next_sent()));
        for (name, value) in fields {
            if !args.contains_key(&name) {
                args.insert(name, value);
            }
        }
        self.client
            .cast(&self.target, "update_backup", args, context)
            .await
    }

    /// Reports that root was enabled on the instance.
    pub async fn report_root(&self, context: &Context) -> Result<(), CallError> {
        let mut args = Map::new();
        args.insert("instance_id".into(), Value::from(self.instance_id.clone()));
        self.client
            .cast(&self.target, "report_root", args, context)
            .await
    }

    /// Reports the successful end of a request, with the request's own context.
    pub async fn notify_end(
        &self,
        context: &Context,
        serialized_notification: Value,
    ) -> Result<(), CallError> {
        let mut args = Map::new();
        args.insert("serialized_notification".into(), serialized_notification);
        args.insert("notification_args".into(), Value::Object(Map::new()));
        self.client
            .cast(&self.target, "notify_end", args, context)
            .await
    }

    /// Reports a failed request: the error message and its traceback lines.
    pub async fn notify_exc_info(
        &self,
        context: &Context,
        serialized_notification: Value,
        message: &str,
        exception: Vec<String>,
    ) -> Result<(), CallError> {
        let mut args = Map::new();
        args.insert("serialized_notification".into(), serialized_notification);
        args.insert("message".into(), Value::from(message));
        args.insert(
            "exception".into(),
            Value::Array(exception.into_iter().map(Value::from).collect()),
        );
        self.client
            .cast(&self.target, "notify_exc_info", args, context)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_strings_fail() {
        for status in ALL_STATUSES {
            assert_eq!(status.as_str().parse::<ServiceStatus>().unwrap(), status);
        }
        assert!("upgrading".parse::<ServiceStatus>().is_err());
        assert!("HEALTHY".parse::<ServiceStatus>().is_err());
    }
}
