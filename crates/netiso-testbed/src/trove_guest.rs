//! What every guest offers the checks, whether simulated or a VM: Trove's control plane
//! talking to its agent, and a tenant logging in to its database. The checks that only need
//! this are written once, here, and run against both kinds of guest.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
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

/// The tenant NIC as the VM itself sees it (not the database container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNic {
    /// Its name in the VM (`ens4` in a VM, the veth's name in a simulated guest).
    pub name: String,
    /// Administratively up.
    pub up: bool,
    /// The addresses on it, `address/prefix` (a VM's global ones: its kernel gives every up
    /// link a link-local address of its own).
    pub addresses: Vec<String>,
    /// Routes that leave through it or lead to the tenant network, default ones included.
    pub routes: Vec<String>,
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

    /// The tenant NIC as the VM sees it; `None` when no link of the VM has the tenant MAC
    /// (the database container holds it).
    fn tenant_nic_in_vm(&self) -> Result<Option<TenantNic>>;

    /// The seed's promise about the VM, wherever the NIC is: the VM holds no tenant address
    /// and no route through the tenant NIC. Returns the NIC when it is in the VM, for the
    /// caller's own conditions (down before `prepare`, absent after).
    fn tenant_nic_bare_in_vm(&self) -> Result<Option<TenantNic>> {
        let nic = self.tenant_nic_in_vm()?;
        if let Some(nic) = &nic {
            ensure!(
                nic.addresses.is_empty() && nic.routes.is_empty(),
                "the {} holds {:?} and routes {:?} on its tenant NIC {}",
                self.kind().as_str(),
                nic.addresses,
                nic.routes,
                nic.name
            );
        }
        Ok(nic)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest whose tenant NIC reads as given; it has no control plane.
    struct StandIn {
        nic: Option<TenantNic>,
        login: TenantLogin,
        _dir: tempfile::TempDir,
    }

    impl StandIn {
        fn with(nic: Option<TenantNic>) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let login = TenantLogin::create(dir.path()).expect("login");
            Self {
                nic,
                login,
                _dir: dir,
            }
        }
    }

    impl TroveGuest for StandIn {
        fn kind(&self) -> GuestKind {
            GuestKind::Simulated
        }
        fn control_plane(&self) -> Result<&Controller> {
            bail!("no control plane in this test")
        }
        fn tenant_login(&self) -> &TenantLogin {
            &self.login
        }
        fn client_netns(&self) -> &str {
            "none"
        }
        fn database_address(&self) -> SocketAddr {
            SocketAddr::from(([10, 252, 0, 10], 3306))
        }
        fn prepare_args(&self) -> Value {
            Value::Null
        }
        fn agent_log_tail(&self) -> String {
            String::new()
        }
        fn tenant_nic_in_vm(&self) -> Result<Option<TenantNic>> {
            Ok(self.nic.clone())
        }
    }

    fn nic(addresses: &[&str], routes: &[&str]) -> TenantNic {
        TenantNic {
            name: "ens4".into(),
            up: false,
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn a_bare_or_absent_nic_passes_and_is_returned() {
        let bare = nic(&[], &[]);
        let guest = StandIn::with(Some(bare.clone()));
        assert_eq!(guest.tenant_nic_bare_in_vm().expect("bare"), Some(bare));
        let gone = StandIn::with(None);
        assert_eq!(gone.tenant_nic_bare_in_vm().expect("absent"), None);
    }

    #[test]
    fn an_address_or_a_route_on_the_nic_fails_naming_it() {
        let addressed = StandIn::with(Some(nic(&["10.252.0.10/24"], &[])));
        let err = addressed.tenant_nic_bare_in_vm().expect_err("address");
        assert!(format!("{err}").contains("10.252.0.10/24"), "{err}");
        let routed = StandIn::with(Some(nic(&[], &["default via 10.252.0.1"])));
        let err = routed.tenant_nic_bare_in_vm().expect_err("route");
        assert!(format!("{err}").contains("default via 10.252.0.1"), "{err}");
        assert!(format!("{err}").contains("simulated guest"), "{err}");
    }

    #[tokio::test]
    async fn without_a_control_plane_the_checks_fail_rather_than_wait() {
        let guest = StandIn::with(None);
        let err = guest
            .answer_rpc_ping(Duration::from_secs(1))
            .await
            .expect_err("no control plane");
        assert!(format!("{err}").contains("no control plane"), "{err}");
    }
}
