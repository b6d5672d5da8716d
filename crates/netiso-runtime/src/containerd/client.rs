//! The gRPC side: one channel to containerd's socket, requests tagged with our containerd
//! namespace (and a lease while a pull or a create is in flight), and `tonic::Status` turned
//! into [`RuntimeError`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{CreateRequest, DeleteRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::error::RuntimeError;

/// The gRPC metadata key selecting the containerd namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The gRPC metadata key attaching a lease to a request.
const LEASE_HEADER: &str = "containerd-lease";
/// The lease label that lets containerd's GC drop a lease an agent crash left behind.
const LEASE_EXPIRE_LABEL: &str = "containerd.io/gc.expire";
/// Deadline of an ordinary (metadata) call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Label marking leases made by this adapter, so a restarted agent can find its own.
pub const LEASE_OWNER_LABEL: &str = "org.openstack.trove.netiso/lease";

/// A connection to containerd, scoped to one containerd namespace.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
    namespace: String,
    socket: String,
}

impl Connection {
    /// Connects to the socket and checks that containerd answers (its version).
    pub async fn connect(socket: &str, namespace: &str) -> Result<(Self, String), RuntimeError> {
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| RuntimeError::Unreachable {
                endpoint: socket.to_owned(),
                source,
            };
        MetadataValue::<tonic::metadata::Ascii>::try_from(namespace).map_err(|_| {
            RuntimeError::InvalidSpec {
                container: String::new(),
                problem: format!("containerd namespace `{namespace}` is not valid"),
            }
        })?;
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| unreachable(Box::new(e)))?;
        let version = VersionClient::new(channel.clone())
            .version(Request::new(()))
            .await
            .map_err(|e| unreachable(Box::new(e)))?
            .into_inner();
        Ok((
            Self {
                channel,
                namespace: namespace.to_owned(),
                socket: socket.to_owned(),
            },
            version.version,
        ))
    }

    /// The containerd namespace requests go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The socket path.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// A request in our namespace.
    /// A request in our namespace, cut after [`CALL_TIMEOUT`] so a hung daemon cannot hang
    /// the agent.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.unbounded(message);
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// A request in our namespace without a deadline, for calls that last as long as a
    /// process (`wait`) or a layer (content writes, unpacking): their callers bound them.
    pub fn unbounded<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.namespace.parse() {
            request.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        request
    }

    /// A request in our namespace that also holds `lease` (no deadline: the lease's expiry
    /// bounds what a stuck call can keep).
    pub fn leased<T>(&self, message: T, lease: &Lease) -> Request<T> {
        let mut request = self.unbounded(message);
        if let Ok(value) = lease.id.parse() {
            request.metadata_mut().insert(LEASE_HEADER, value);
        }
        request
    }

    /// The containers service.
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    /// The content service.
    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// The diff service.
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }

    /// The images service.
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    /// The leases service.
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }

    /// The snapshots service.
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    /// The tasks service.
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// Creates a lease that protects what is made under it from containerd's GC, and that
    /// expires by itself after `ttl` should we crash before [`Connection::drop_lease`].
    pub async fn lease(&self, purpose: &str, ttl: Duration) -> Result<Lease, RuntimeError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!("netiso-{purpose}-{}-{}", std::process::id(), now.as_nanos());
        let expires = rfc3339(now + ttl);
        let labels = [
            (LEASE_EXPIRE_LABEL.to_owned(), expires),
            (LEASE_OWNER_LABEL.to_owned(), purpose.to_owned()),
        ]
        .into();
        self.leases()
            .create(self.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|e| backend("create lease", &id, e))?;
        Ok(Lease { id })
    }

    /// Deletes a lease (synchronously collecting what only it referenced).
    pub async fn drop_lease(&self, lease: Lease) -> Result<(), RuntimeError> {
        match self
            .leases()
            .delete(self.request(DeleteRequest {
                id: lease.id.clone(),
                sync: true,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Code::NotFound => Ok(()),
            Err(e) => Err(backend("delete lease", &lease.id, e)),
        }
    }
}

/// A containerd lease held by this adapter.
#[derive(Debug)]
pub struct Lease {
    /// The lease id.
    pub id: String,
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time since the epoch (what containerd parses for expiry).
fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A containerd error as [`RuntimeError::Backend`], keeping its status as the source.
pub fn backend(operation: &'static str, target: &str, status: Status) -> RuntimeError {
    // containerd also says Unavailable for a locked ingest; only a transport failure
    // means the daemon is unreachable.
    if status.code() == Code::Unavailable && !status.message().contains("locked") {
        return RuntimeError::Unreachable {
            endpoint: "containerd".to_owned(),
            source: Box::new(status),
        };
    }
    RuntimeError::Backend {
        operation,
        target: target.to_owned(),
        source: Box::new(status),
    }
}

/// True when containerd answered NotFound.
pub fn is_not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

/// True when containerd answered AlreadyExists.
pub fn is_already_exists(status: &Status) -> bool {
    status.code() == Code::AlreadyExists
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(1_795_600_000)),
            "2026-11-25T09:46:40Z"
        );
    }
}
