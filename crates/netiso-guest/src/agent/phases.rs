//! The agent's start-up, one phase per function, in the order [`super::run`] calls them:
//! configuration (the tenant NIC file), isolation, readiness, preflight, RPC, heartbeats,
//! shutdown. The phases before RPC fill in one [`Safety`]: what keeps the tenant NIC away
//! from the VM and whether the database may start. The decisions inside each phase that need
//! no kernel, runtime or broker are plain functions with their own tests.

use std::sync::Arc;
use std::time::Duration;

use netiso_config::TenantNic;
use netiso_messaging::{
    BrokerConfig, ConductorClient, InstanceKey, RpcServer, Serializer, ServerConfig, ServiceStatus,
    Target, Transport,
};
use netiso_netlink::NetlinkHandle;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{
    AgentConfig, AgentError, AgentOptions, IsolationOutcome, MAX_CONCURRENT_REQUESTS,
    database_settings, isolate_at_startup, isolate_refused_tenant_file, log_guard_reports, notify,
    notify_ready_once_isolated, rabbit_options, record_baseline, report_late_refusal,
    run_preflight, runtime_endpoint, runtime_on_demand, start_isolation_retry, start_server,
    unsupported_mode,
};
use crate::gate::DatabaseGate;
use crate::isolation::{Guard, GuardOptions, IsolationTarget};
use crate::preflight::{PreflightFailure, PreflightReport};
use crate::rpc::{self, ConductorSink, GuestService, InFlight, TcpProbe};

/// What the phases before RPC established about the VM's safety.
pub(super) struct Safety {
    /// The tenant NIC and its isolation target, when `eth1.json` was usable.
    pub(super) tenant: Option<(TenantNic, IsolationTarget)>,
    /// Why no database may start on this VM, once something failed for good.
    pub(super) refusal: Option<String>,
    /// What keeps the tenant NIC away from the VM after isolation.
    pub(super) guard: Option<Guard>,
    /// The database gate while a failed isolation is being retried.
    pub(super) pending: Option<DatabaseGate>,
}

impl Safety {
    /// Nothing refused and nothing still being retried.
    fn is_clear(&self) -> bool {
        self.refusal.is_none() && self.pending.is_none()
    }
}

/// Configuration: reads the tenant NIC file. Unusable with isolation requested, the database
/// is refused and the NIC the file still names is isolated all the same (fail closed).
pub(super) async fn configuration(config: &AgentConfig, rtnl: &Arc<NetlinkHandle>) -> Safety {
    let isolated = config.guest.isolation_mode().is_isolated();
    let mut safety = Safety {
        tenant: None,
        refusal: None,
        guard: None,
        pending: None,
    };
    match config.tenant() {
        Ok(tenant) => safety.tenant = tenant,
        Err(e) if isolated => {
            error!(error = %e, "the tenant NIC file is unusable: no database will be started on this VM");
            safety.refusal = Some(format!("isolation: {e}"));
            safety.guard = isolate_refused_tenant_file(Arc::clone(rtnl), config).await;
        }
        Err(e) => warn!(error = %e, "the tenant NIC file is unreadable (bridged mode, not needed)"),
    }
    safety
}

/// Isolation, fail closed: takes the tenant NIC away from the VM and starts the guard; a
/// failure is retried in the background with the database gate pending. In bridged mode,
/// refuses the database when the configuration cannot give the mode it asks for.
pub(super) async fn isolation(
    config: &AgentConfig,
    options: &AgentOptions,
    rtnl: &Arc<NetlinkHandle>,
    stop: &watch::Receiver<bool>,
    safety: &mut Safety,
) {
    let mode = config.guest.isolation_mode();
    if !mode.is_isolated() {
        if let Some(reason) = unsupported_mode(&config.guest) {
            error!(%reason, "no database will be started on this VM");
            safety.refusal = Some(reason);
        }
        return;
    }
    let Some((_, target)) = &safety.tenant else {
        return;
    };
    match isolate_at_startup(Arc::clone(rtnl), target, config).await {
        IsolationOutcome::Applied(report) => {
            info!(mac = %target.mac, changes = report.changes.len(), "tenant NIC isolated from the VM");
            record_baseline(config, target, &report);
        }
        IsolationOutcome::HeldByContainer(name) => {
            info!(mac = %target.mac, container = %name, "the tenant NIC is inside the database container");
            // Nothing is isolated now, so no baseline is recorded: one torn by a crash must
            // not stay where `isolate --verify` would read it.
            match crate::isolation::baseline::set_aside_if_unusable(
                &config.guest.netiso.state_dir,
                target,
            ) {
                None => {}
                Some(Ok((kept_as, reason))) => error!(kept_as = %kept_as.display(), %reason,
                    "the isolation baseline was unusable: kept aside; `isolate --verify` has none until the agent isolates again"),
                Some(Err(e)) => {
                    error!(error = %e, "the isolation baseline is unusable and could not be set aside")
                }
            }
        }
        IsolationOutcome::Failed(reason) => {
            error!(%reason, "isolation failed: retrying; no database is started until it succeeds");
            safety.pending = Some(start_isolation_retry(
                config, options, rtnl, target, stop, reason,
            ));
        }
    }
    if !safety.is_clear() {
        return;
    }
    match Guard::start(Arc::clone(rtnl), target.clone(), GuardOptions::default()) {
        Ok(started) => {
            log_guard_reports(&started);
            info!(mac = %target.mac, "isolation guard running");
            safety.guard = Some(started);
        }
        Err(e) => {
            error!(error = %e, "cannot start the isolation guard: no database will be started");
            safety.refusal = Some(format!("isolation guard: {e}"));
        }
    }
}

/// Readiness: `READY=1` means isolated (or nothing to isolate), so units ordered after the
/// agent, and an operator's `systemctl start`, wait for that and not for the broker. A failed
/// isolation being retried says `READY=1` only once it succeeds.
pub(super) fn readiness(config: &AgentConfig, safety: &Safety) {
    let isolated = config.guest.isolation_mode().is_isolated();
    match &safety.pending {
        None => notify(&ready_message(safety.refusal.as_deref(), isolated)),
        Some(gate) => notify_ready_once_isolated(gate.clone()),
    }
}

/// The `READY=1` notification and its status line.
fn ready_message(refusal: Option<&str>, isolated: bool) -> String {
    let status = match refusal {
        Some(reason) => format!("database refused: {reason}"),
        None if isolated => "isolated".to_owned(),
        None => "bridged".to_owned(),
    };
    format!("READY=1\nSTATUS={status}; starting RPC")
}

/// Preflight: the control plane must be reached through a management interface. Logged per
/// endpoint; in isolated mode a route through the tenant NIC refuses the database.
pub(super) async fn preflight(
    config: &AgentConfig,
    options: &AgentOptions,
    rtnl: &NetlinkHandle,
    safety: &mut Safety,
) {
    let tenant_mac = safety.tenant.as_ref().map(|(_, target)| target.mac);
    let report = run_preflight(config, rtnl, tenant_mac, options.preflight_timeout).await;
    for check in &report.checks {
        match &check.outcome {
            Ok(took) => {
                info!(requirement = %check.endpoint.requirement, endpoint = %check.endpoint, interface = check.interface.as_deref().unwrap_or("?"), took_ms = took.as_millis() as u64, "preflight passed")
            }
            Err(failure) => error!(%failure, "preflight failed"),
        }
    }
    if config.guest.isolation_mode().is_isolated() && safety.is_clear() {
        safety.refusal = tenant_route_refusal(&report);
    }
}

/// The refusal a preflight implies in isolated mode: control-plane traffic routed through the
/// tenant NIC. Other failures (a broker down) are logged and retried by the transport.
fn tenant_route_refusal(report: &PreflightReport) -> Option<String> {
    let through_tenant: Vec<String> = report
        .failures()
        .filter(|f| matches!(f, PreflightFailure::ThroughTenantNic { .. }))
        .map(ToString::to_string)
        .collect();
    (!through_tenant.is_empty()).then(|| format!("preflight: {}", through_tenant.join("; ")))
}

/// How long start-up waits for the container runtime's first answer before serving RPC
/// without it (a daemon that accepts and never answers would otherwise hold RPC back for the
/// client's own timeout).
const RUNTIME_CHECK_AT_START: Duration = Duration::from_secs(10);

/// What the RPC phase leaves running until shutdown.
pub(super) struct Rpc {
    service: Arc<GuestService>,
    server: RpcServer,
    transport: Transport,
    in_flight: InFlight,
}

/// RPC: the transport (unusable TLS settings or key end the run here, before the runtime is
/// asked anything), the runtime the handlers need, the server on `guestagent.<guest_id>`, and
/// the first status. `None` when shutdown came while the broker was still unreachable.
pub(super) async fn rpc(
    config: &AgentConfig,
    safety: &mut Safety,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Rpc>, AgentError> {
    let guest = &config.guest;
    let broker = BrokerConfig::from_transport_url(&guest.transport_url)?;
    let key = guest
        .instance_rpc_encr_key
        .as_ref()
        .map(|k| InstanceKey::new(k.expose()))
        .transpose()
        .map_err(AgentError::InstanceKey)?;
    let transport = Transport::start(broker, rabbit_options(guest))?;
    let runtime = runtime_on_demand(config)?;
    let unanswered = match tokio::time::timeout(RUNTIME_CHECK_AT_START, runtime.connected()).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no answer from {} within {} s",
            runtime_endpoint(config),
            RUNTIME_CHECK_AT_START.as_secs()
        )),
    };
    if let Some(error) = unanswered {
        warn!(%error, "the container runtime does not answer: serving RPC anyway; requests that need it fail and say so, and each of them and each heartbeat tries it again");
    }
    let conductor = ConductorClient::new(
        &transport,
        &guest.control_exchange,
        &guest.conductor_queue,
        &guest.guest_id,
        key.clone(),
    );
    let tenant_nic = safety.tenant.as_ref().map(|(nic, _)| nic.clone());
    let mut service = GuestService::new(
        database_settings(config, tenant_nic),
        runtime,
        Arc::new(ConductorSink(conductor)),
        Arc::new(TcpProbe::default()),
        safety.refusal.clone(),
    );
    if let Some(gate) = &safety.pending {
        service = service.with_gate(gate.clone());
    }
    let service = Arc::new(service);
    let in_flight = InFlight::default();
    let server_config = server_config(config, key);
    let make_dispatcher = || rpc::dispatcher(Arc::clone(&service), &in_flight);
    let Some(server) = start_server(&transport, &server_config, &make_dispatcher, stop).await
    else {
        transport.close();
        return Ok(None);
    };
    if let Some(reason) = &safety.refusal {
        service.heartbeat(ServiceStatus::FailedToSpawn).await;
        notify(&format!("STATUS=serving RPC; database refused: {reason}"));
    } else if let Some(gate) = &safety.pending {
        notify("STATUS=serving RPC; database waiting: isolation failed, retrying");
        report_late_refusal(gate.clone(), Arc::clone(&service));
    } else {
        let mode = if guest.isolation_mode().is_isolated() {
            "isolated"
        } else {
            "bridged"
        };
        notify(&format!("STATUS=serving RPC ({mode})"));
    }
    info!(topic = %server_config.target.topic, exchange = %server_config.exchange, "guest agent ready");
    Ok(Some(Rpc {
        service,
        server,
        transport,
        in_flight,
    }))
}

/// The RPC server's identity and limits: Trove's topic and server name for this guest, the
/// encrypted serializer when the instance has a key.
fn server_config(config: &AgentConfig, key: Option<InstanceKey>) -> ServerConfig {
    let guest = &config.guest;
    let server_config = ServerConfig::new(
        guest.control_exchange.clone(),
        Target {
            topic: format!("guestagent.{}", guest.guest_id),
            server: Some(guest.guest_id.clone()),
            version: rpc::GUEST_API_VERSION.to_owned(),
        },
        key.map_or(Serializer::Plain, Serializer::Secure),
    )
    .with_max_concurrency(MAX_CONCURRENT_REQUESTS);
    match guest.netiso.rpc_max_message_bytes {
        Some(limit) => {
            server_config.with_max_message_bytes(usize::try_from(limit).unwrap_or(usize::MAX))
        }
        None => server_config,
    }
}

/// Heartbeats: the database's status to the conductor every `interval` once prepared, until
/// shutdown.
pub(super) async fn heartbeats(rpc: &Rpc, interval: Duration, stop: &mut watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if rpc.service.is_prepared() {
                    let mut status = rpc.service.current_status().await;
                    if status == ServiceStatus::Shutdown && rpc.service.revive_database().await {
                        status = rpc.service.current_status().await;
                    }
                    rpc.service.heartbeat(status).await;
                }
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
}

/// Shutdown: no new requests, the running ones finished (at most `timeout`), the guard and
/// the transport stopped.
pub(super) async fn shutdown(rpc: Rpc, guard: Option<Guard>, timeout: Duration) {
    notify("STOPPING=1");
    info!(
        in_flight = rpc.in_flight.current(),
        handled = rpc.in_flight.started(),
        "shutting down: finishing in-flight requests"
    );
    rpc.server.stop().await;
    let left = rpc.in_flight.wait_idle(timeout).await;
    if left > 0 {
        warn!(
            left,
            timeout_s = timeout.as_secs(),
            "requests still running at shutdown"
        );
    }
    if let Some(guard) = guard {
        guard.stop();
    }
    rpc.transport.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::{Check, Endpoint, Requirement};

    #[test]
    fn ready_says_isolated_bridged_or_why_the_database_is_refused() {
        assert_eq!(
            ready_message(None, true),
            "READY=1\nSTATUS=isolated; starting RPC"
        );
        assert_eq!(
            ready_message(None, false),
            "READY=1\nSTATUS=bridged; starting RPC"
        );
        assert_eq!(
            ready_message(Some("isolation: bad file"), true),
            "READY=1\nSTATUS=database refused: isolation: bad file; starting RPC"
        );
    }

    fn check(outcome: Result<Duration, PreflightFailure>) -> Check {
        Check {
            endpoint: Endpoint {
                requirement: Requirement::Messaging,
                host: "10.0.0.1".to_owned(),
                port: 5672,
            },
            interface: Some("ens3".to_owned()),
            outcome,
        }
    }

    #[test]
    fn only_a_route_through_the_tenant_nic_refuses_the_database() {
        let through_tenant = PreflightFailure::ThroughTenantNic {
            requirement: Requirement::Messaging,
            endpoint: "10.0.0.1:5672".to_owned(),
            address: "10.0.0.1".parse().expect("an address"),
            interface: "ens4".to_owned(),
            mac: "fa:16:3e:00:00:01".parse().expect("a MAC"),
        };
        let no_route = PreflightFailure::NoRoute {
            requirement: Requirement::Registry,
            endpoint: "10.0.0.2:5000".to_owned(),
            address: "10.0.0.2".parse().expect("an address"),
            reason: "unreachable".to_owned(),
        };
        let passed = PreflightReport {
            checks: vec![check(Ok(Duration::from_millis(3)))],
        };
        assert_eq!(tenant_route_refusal(&passed), None);
        let broker_down = PreflightReport {
            checks: vec![check(Err(no_route.clone()))],
        };
        assert_eq!(tenant_route_refusal(&broker_down), None);
        let leaking = PreflightReport {
            checks: vec![check(Err(no_route)), check(Err(through_tenant.clone()))],
        };
        assert_eq!(
            tenant_route_refusal(&leaking),
            Some(format!("preflight: {through_tenant}"))
        );
    }
}
