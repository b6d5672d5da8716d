//! A runtime connected on first use, for a guest whose container daemon may be down when
//! the guest agent starts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use netiso_netlink::Link;
use tokio::sync::OnceCell;

use crate::error::RuntimeError;
use crate::image::{ImageReference, ImageStatus, PullPolicy, PullProgress, RegistryCredentials};
use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSummary, NetworkNamespace, NetworkStatus,
};
use crate::spec::{ContainerSpec, HostnicNetworkSpec};

/// One attempt to connect: the adapter's own `connect`, boxed.
pub type ConnectAttempt =
    Pin<Box<dyn Future<Output = Result<Arc<dyn ContainerRuntime>, RuntimeError>> + Send>>;

/// A [`ContainerRuntime`] that connects when it is first used, and tries again on every
/// later call until a connection succeeds; from then on it is that connection (the
/// adapters' clients reconnect by themselves per request).
///
/// A guest agent that connected eagerly had to exit while dockerd or containerd was broken,
/// and systemd restarted it in a loop without it ever saying why over RPC. With this the
/// agent serves RPC from the start: each request that needs the runtime fails with
/// [`RuntimeError::Unreachable`] naming the socket, and heartbeats report the database's
/// status as unknown, until the daemon answers.
pub struct ConnectOnDemand {
    connect: Box<dyn Fn() -> ConnectAttempt + Send + Sync>,
    connected: OnceCell<Arc<dyn ContainerRuntime>>,
}

impl ConnectOnDemand {
    /// A runtime that calls `connect` until it succeeds once; concurrent first calls share
    /// one attempt.
    pub fn new(connect: impl Fn() -> ConnectAttempt + Send + Sync + 'static) -> Self {
        Self {
            connect: Box::new(connect),
            connected: OnceCell::new(),
        }
    }

    /// Connects now if not yet connected, so that a caller can log at start-up whether the
    /// daemon answers; the error is the adapter's.
    pub async fn connected(&self) -> Result<&Arc<dyn ContainerRuntime>, RuntimeError> {
        self.connected.get_or_try_init(|| (self.connect)()).await
    }
}

#[async_trait]
impl ContainerRuntime for ConnectOnDemand {
    async fn ensure_image(
        &self,
        image: &ImageReference,
        policy: PullPolicy,
        credentials: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<ImageStatus, RuntimeError> {
        self.connected()
            .await?
            .ensure_image(image, policy, credentials, progress)
            .await
    }

    async fn ensure_hostnic_network(
        &self,
        network: &HostnicNetworkSpec,
    ) -> Result<NetworkStatus, RuntimeError> {
        self.connected()
            .await?
            .ensure_hostnic_network(network)
            .await
    }

    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        self.connected().await?.remove_network(name).await
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.connected().await?.create_container(spec).await
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        self.connected().await?.start(name).await
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.connected().await?.stop(name, timeout).await
    }

    async fn restart(&self, name: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.connected().await?.restart(name, timeout).await
    }

    async fn remove(&self, name: &str, force: bool) -> Result<bool, RuntimeError> {
        self.connected().await?.remove(name, force).await
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        self.connected().await?.inspect(name).await
    }

    async fn list(&self) -> Result<Vec<ContainerSummary>, RuntimeError> {
        self.connected().await?.list().await
    }

    async fn network_namespace(
        &self,
        name: &str,
    ) -> Result<Option<NetworkNamespace>, RuntimeError> {
        self.connected().await?.network_namespace(name).await
    }

    async fn network_interfaces(&self, name: &str) -> Result<Option<Vec<Link>>, RuntimeError> {
        self.connected().await?.network_interfaces(name).await
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.connected().await?.run(spec).await
    }

    async fn wait_healthy(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<ContainerInfo, RuntimeError> {
        self.connected().await?.wait_healthy(name, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A daemon that answers every call, with nothing in it.
    struct EmptyDaemon;

    #[async_trait]
    impl ContainerRuntime for EmptyDaemon {
        async fn ensure_image(
            &self,
            image: &ImageReference,
            _: PullPolicy,
            _: Option<&RegistryCredentials>,
            _: &mut (dyn FnMut(PullProgress) + Send),
        ) -> Result<ImageStatus, RuntimeError> {
            Ok(ImageStatus::Present {
                id: image.to_string(),
            })
        }
        async fn ensure_hostnic_network(
            &self,
            network: &HostnicNetworkSpec,
        ) -> Result<NetworkStatus, RuntimeError> {
            Ok(NetworkStatus::Reused {
                id: network.name.clone(),
            })
        }
        async fn remove_network(&self, _: &str) -> Result<bool, RuntimeError> {
            Ok(false)
        }
        async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
            Ok(spec.name.clone())
        }
        async fn start(&self, _: &str) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn stop(&self, _: &str, _: Duration) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn restart(&self, _: &str, _: Duration) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn remove(&self, _: &str, _: bool) -> Result<bool, RuntimeError> {
            Ok(false)
        }
        async fn inspect(&self, _: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
            Ok(None)
        }
        async fn list(&self) -> Result<Vec<ContainerSummary>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn network_namespace(
            &self,
            _: &str,
        ) -> Result<Option<NetworkNamespace>, RuntimeError> {
            Ok(None)
        }
    }

    /// A runtime whose daemon answers from the `answers_from`-th connection attempt on, and
    /// the count of attempts.
    fn on_demand(answers_from: u32) -> (ConnectOnDemand, Arc<AtomicU32>) {
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&attempts);
        let runtime = ConnectOnDemand::new(move || {
            let attempt = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                if attempt >= answers_from {
                    Ok(Arc::new(EmptyDaemon) as Arc<dyn ContainerRuntime>)
                } else {
                    Err(RuntimeError::Unreachable {
                        endpoint: "unix:///run/docker.sock".into(),
                        source: "connection refused".into(),
                    })
                }
            })
        });
        (runtime, attempts)
    }

    #[tokio::test]
    async fn a_down_daemon_fails_each_call_naming_its_socket_until_it_answers() {
        let (runtime, attempts) = on_demand(3);
        for _ in 0..2 {
            let error = runtime.inspect("database").await.expect_err("daemon down");
            assert!(
                error.to_string().contains("unix:///run/docker.sock"),
                "{error}"
            );
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 2, "one attempt per call");
        assert_eq!(runtime.inspect("database").await.expect("answers"), None);
        runtime.start("database").await.expect("connected");
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            3,
            "no attempt once connected"
        );
    }

    #[tokio::test]
    async fn concurrent_first_calls_share_one_attempt() {
        let (runtime, attempts) = on_demand(1);
        let runtime = Arc::new(runtime);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let runtime = Arc::clone(&runtime);
                tokio::spawn(async move { runtime.list().await })
            })
            .collect();
        for call in calls {
            call.await.expect("task").expect("listed");
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
