//! What every guest offers the checks, whether simulated or a VM: Trove's control plane
//! talking to its agent, and a tenant logging in to its database. The checks that only need
//! this are written once, here, and run against both kinds of guest.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::controller::{ConductorEvent, Controller};
use crate::sql::TenantLogin;

/// Which kind of guest stands behind a [`TroveGuest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// Namespaces and veths on this machine, the agent as a process.
    Simulated,
    /// The guest image booted under QEMU, the agent started by systemd.
    Vm,
}

impl GuestKind {
    /// How reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Simulated => "simulated guest",
            Self::Vm => "guest VM",
        }
    }
}

/// When `prepare` was cast, and how long the guest took to report `healthy`.
#[derive(Debug, Clone)]
pub struct PrepareCast {
    /// When the cast left.
    pub at: Instant,
    /// From the cast to the `healthy` heartbeat.
    pub healthy_after: Duration,
    /// What the conductor received meanwhile, for the report.
    pub events: Vec<ConductorEvent>,
}

/// A Trove guest under test. The required methods say where its pieces are; the provided
/// ones are the checks both kinds share, so a scenario reads the same on either.
// The checks are awaited where they are called, never spawned, so their futures need no
// `Send` bound in the trait's signature.
#[allow(async_fn_in_trait)]
pub trait TroveGuest {
    /// Simulated or VM.
    fn kind(&self) -> GuestKind;

    /// Trove's taskmanager and conductor for this guest (gone once the guest is torn down).
    fn control_plane(&self) -> Result<&Controller>;

    /// The tenant's database login, which `prepare` creates.
    fn tenant_login(&self) -> &TenantLogin;

    /// The namespace of the tenant's client, on the tenant network.
    fn client_netns(&self) -> &str;

    /// Where the tenant reaches the database: the container's own address when isolated, the
    /// VM's tenant address (DNAT) when bridged.
    fn database_address(&self) -> SocketAddr;

    /// `prepare`'s arguments as Trove's taskmanager sends them to this guest.
    fn prepare_args(&self) -> Value;

    /// The agent's last lines of interest, for a failure's detail.
    fn agent_log_tail(&self) -> String;

    /// Pings the agent until it answers; returns how long that took.
    async fn answer_rpc_ping(&self, limit: Duration) -> Result<Duration> {
        self.control_plane()?
            .ping_until_answered(limit)
            .await
            .map_err(|e| e.context(format!("agent log: {}", self.agent_log_tail())))
    }

    /// Casts `prepare` and waits for the agent's `healthy` heartbeat; any other outcome
    /// fails with what the conductor heard (the reason follows the status as
    /// `notify_exc_info`) and the agent's log.
    async fn prepare_until_healthy(&self, limit: Duration) -> Result<PrepareCast> {
        let controller = self.control_plane()?;
        let mark = controller.mark();
        let at = Instant::now();
        controller.cast("prepare", self.prepare_args()).await?;
        let outcome = controller
            .wait_event(mark, limit, |e| {
                matches!(e, ConductorEvent::Heartbeat(s) if s == "healthy" || s == "failed to spawn")
            })
            .await
            .map_err(|e| e.context(format!("agent log: {}", self.agent_log_tail())))?;
        let healthy_after = at.elapsed();
        if outcome != ConductorEvent::Heartbeat("healthy".into()) {
            let _ = controller
                .wait_event(mark, Duration::from_secs(3), |e| {
                    matches!(e, ConductorEvent::NotifyExcInfo(_))
                })
                .await;
            bail!(
                "the guest reported {:?}; agent log: {}",
                controller.events_since(mark),
                self.agent_log_tail()
            );
        }
        Ok(PrepareCast {
            at,
            healthy_after,
            events: controller.events_since(mark),
        })
    }

    /// Runs statements as the tenant from the tenant network; returns the rows.
    fn tenant_sql(&self, statements: &str) -> Result<String> {
        self.tenant_login()
            .run(self.client_netns(), self.database_address(), statements)
    }

    /// Polls the tenant's login until the database lets it in; returns how long that took
    /// and the account the server matched.
    fn first_tenant_login(&self, limit: Duration) -> Result<(Duration, String)> {
        self.tenant_login()
            .first_login(self.client_netns(), self.database_address(), limit)
            .map_err(|e| e.context(format!("agent log: {}", self.agent_log_tail())))
    }

    /// Waits for a `healthy` heartbeat sent after this call.
    async fn fresh_healthy_heartbeat(&self, limit: Duration) -> Result<Duration> {
        let controller = self.control_plane()?;
        let mark = controller.mark();
        let started = Instant::now();
        controller
            .wait_event(mark, limit, |e| {
                *e == ConductorEvent::Heartbeat("healthy".into())
            })
            .await?;
        Ok(started.elapsed())
    }
}
