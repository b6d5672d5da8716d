//! The scenarios and their checks. Each scenario builds its own guest, runs its checks in
//! order and tears everything down; scenarios run one after another because they share the
//! guest namespace, dockerd and the `database` container name.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use netiso_netlink::{Namespace, NetlinkHandle, Rtnetlink};
use netiso_runtime::ContainerStatus;
use serde_json::json;

use crate::controller::ConductorEvent;
use crate::guest::{Guest, GuestPlan, PREPARED_MAX_CONNECTIONS, SERVER_ID};
use crate::guest_files::{DATABASE_PORT, RuntimeKind};
use crate::host::rss_kib;
use crate::image::ScenarioImage;
use crate::net::{
    CLIENT_ADDR, Counters, GUEST_TENANT_ADDR, connect_in, counters, established_in,
    established_of_pid, expect_unreachable, link_of_address, links_and_addresses, listen_in,
    mariadb_greeting,
};
use crate::probes::{GuestView, container_links, container_netns, image_bytes};
use crate::processes::{DaemonCommand, DockerdGuard, RabbitGuard, dockerd_answers, wait_for};
use crate::report::{Report, ScenarioReport};
use crate::settings::{DATABASE_CONTAINER, ScenarioName, Settings};
use crate::sql::mariadb_config;
use crate::vm::{self, VmMode};
use crate::{PrepareCast, TroveGuest};

/// How long a database may take to become healthy after `prepare` (pull, create, start).
pub(crate) const PREPARE_LIMIT: Duration = Duration::from_secs(180);
/// How long the agent may take to answer its first `rpc_ping`.
pub(crate) const AGENT_START_LIMIT: Duration = Duration::from_secs(60);
/// Connect timeout of the "must not reach" probes.
const UNREACHABLE_PROBE: Duration = Duration::from_millis(1500);
/// The management gateway (RabbitMQ and the registry as the guest reaches them).
const MGMT_GATEWAY: [u8; 4] = [10, 251, 0, 1];
/// How long the tenant may wait for its first login once the database reported healthy.
const LOGIN_LIMIT: Duration = Duration::from_secs(60);
/// `max_connections` of the config `start_db_with_conf_changes` sends.
const CHANGED_MAX_CONNECTIONS: u32 = 123;

/// The database image one scenario pulls.
pub(crate) struct TestImage {
    published: ScenarioImage,
    /// The repository, without the registry.
    pub(crate) repository: String,
    /// The tag, which is the datastore version the guest is told.
    pub(crate) tag: String,
}

pub(crate) async fn publish_image(settings: &Settings, serial: u32) -> Result<(TestImage, String)> {
    let tag = format!("h{}-{serial}", std::process::id());
    let docker_host = format!("unix://{}", settings.docker_socket.display());
    let published = ScenarioImage::publish(&docker_host, &settings.guest_registry, &tag).await?;
    let reference = published.reference().clone();
    let repository = reference
        .name()
        .strip_prefix(&format!("{}/", reference.registry()))
        .unwrap_or(reference.name())
        .to_owned();
    let bytes = image_bytes(&settings.host_registry, &repository, &tag)?;
    let detail = format!(
        "{reference} pushed (MariaDB plus a layer of its own, {} bytes), {bytes} bytes in the registry",
        published.unique_layer_bytes()
    );
    Ok((
        TestImage {
            published,
            repository,
            tag,
        },
        detail,
    ))
}

/// Runs the scenarios in order, recording every check.
pub async fn run_all(settings: &Settings, scenarios: &[ScenarioName], report: &mut Report) {
    for (serial, name) in scenarios.iter().enumerate() {
        let serial = u32::try_from(serial).unwrap_or(0);
        let mut s = ScenarioReport::new(report, name.as_str());
        match name {
            ScenarioName::DockerIsolated => {
                standard(settings, &mut s, serial, RuntimeKind::Docker, true).await;
            }
            ScenarioName::DockerBridged => {
                standard(settings, &mut s, serial, RuntimeKind::Docker, false).await;
            }
            ScenarioName::ContainerdIsolated => {
                standard(settings, &mut s, serial, RuntimeKind::Containerd, true).await;
            }
            ScenarioName::ContainerdBridged => containerd_bridged(settings, &mut s, serial).await,
            ScenarioName::DockerFaults => faults(settings, &mut s, serial).await,
            ScenarioName::IsolationImpossible => impossible(settings, &mut s, serial).await,
            ScenarioName::VmDockerIsolated => {
                vm::run(settings, &mut s, name.as_str(), VmMode::DockerIsolated).await;
            }
            ScenarioName::VmDockerBridged => {
                vm::run(settings, &mut s, name.as_str(), VmMode::DockerBridged).await;
            }
            ScenarioName::VmContainerdIsolated => {
                vm::run(settings, &mut s, name.as_str(), VmMode::ContainerdIsolated).await;
            }
            ScenarioName::VmTroveReference => {
                vm::run(settings, &mut s, name.as_str(), VmMode::TroveReference).await;
            }
        }
    }
}

/// Publishes the image and builds the guest; on failure every later check is recorded as
/// not run. The image comes first so that callers' bindings drop the guest (and its
/// container) before the image, also when the scenario is interrupted.
async fn set_up(
    settings: &Settings,
    s: &mut ScenarioReport<'_>,
    plan: GuestPlan,
    later: &[&str],
) -> Option<(TestImage, Guest)> {
    let Some(image) = s
        .check("test-image", publish_image(settings, plan.serial))
        .await
    else {
        mark_not_run(s, &["setup"], "the test image could not be published");
        mark_not_run(s, later, "the test image could not be published");
        return None;
    };
    let plan = GuestPlan {
        image_repository: image.repository.clone(),
        image_tag: image.tag.clone(),
        ..plan
    };
    match s.check("setup", Guest::start(settings, &plan)).await {
        Some(guest) => Some((image, guest)),
        None => {
            mark_not_run(s, later, "setup failed");
            None
        }
    }
}

fn mark_not_run(s: &mut ScenarioReport<'_>, checks: &[&str], reason: &str) {
    for check in checks {
        s.not_run(check, reason);
    }
}

pub(crate) fn plan(scenario: &str, serial: u32, runtime: RuntimeKind, isolated: bool) -> GuestPlan {
    GuestPlan {
        scenario: scenario.to_owned(),
        serial,
        runtime,
        isolated,
        absent_mac: false,
        image_repository: String::new(),
        image_tag: String::new(),
        state_dir_bytes: None,
        heartbeat_seconds: None,
    }
}

/// The SQL checks of a scenario whose database runs.
const SQL_CHECKS: &[&str] = &[
    "sql-round-trip-as-prepared-user",
    "restart-keeps-the-row",
    "conf-changes-visible-to-client",
];

const ISOLATED_CHECKS: &[&str] = &[
    "agent-answers-rpc_ping",
    "startup-isolation",
    "prepare-healthy",
    "client-reaches-database-direct",
    "sql-round-trip-as-prepared-user",
    "restart-keeps-the-row",
    "conf-changes-visible-to-client",
    "guest-has-no-tenant-nic",
    "guest-has-no-tenant-address",
    "guest-has-no-tenant-route",
    "guest-has-no-tenant-default-route",
    "guest-cannot-reach-client",
    "client-cannot-reach-guest-mgmt",
    "client-cannot-reach-broker",
    "container-has-only-lo-and-eth0",
    "image-pull-via-mgmt0",
    "rabbitmq-via-mgmt0",
    "cleanup",
];

const BRIDGED_CHECKS: &[&str] = &[
    "agent-answers-rpc_ping",
    "prepare-healthy",
    "client-reaches-database-via-dnat",
    "sql-round-trip-as-prepared-user",
    "restart-keeps-the-row",
    "conf-changes-visible-to-client",
    "container-has-no-tenant-nic",
    "guest-keeps-tenant-nic",
    "image-pull-via-mgmt0",
    "rabbitmq-via-mgmt0",
    "cleanup",
];

/// Isolated or bridged, with one runtime: the traffic split end to end.
async fn standard(
    settings: &Settings,
    s: &mut ScenarioReport<'_>,
    serial: u32,
    runtime: RuntimeKind,
    isolated: bool,
) {
    let name = format!(
        "{}-{}",
        runtime.as_str(),
        if isolated { "isolated" } else { "bridged" }
    );
    let later = if isolated {
        ISOLATED_CHECKS
    } else {
        BRIDGED_CHECKS
    };
    let Some((image, guest)) =
        set_up(settings, s, plan(&name, serial, runtime, isolated), later).await
    else {
        return;
    };
    s.check("agent-answers-rpc_ping", agent_answers(&guest))
        .await;
    if isolated {
        s.check("startup-isolation", startup_isolation(&guest))
            .await;
    }
    let before = traffic_counters(settings, &guest).ok();
    let cast = s.check("prepare-healthy", prepare(&guest)).await;
    let prepared = cast.is_some();
    let after = traffic_counters(settings, &guest).ok();
    const NO_DATABASE: &str = "no database: prepare did not end healthy";
    if isolated {
        if !prepared {
            s.not_run("client-reaches-database-direct", NO_DATABASE);
        } else if let Some(flow) = s
            .check(
                "client-reaches-database-direct",
                client_reaches_database(&guest, true),
            )
            .await
        {
            s.flow(flow);
        }
        sql_checks(settings, s, &guest, &image, cast.as_ref()).await;
        isolation_checks(settings, s, &guest, prepared).await;
    } else {
        if !prepared {
            s.not_run("client-reaches-database-via-dnat", NO_DATABASE);
            s.not_run("container-has-no-tenant-nic", NO_DATABASE);
        } else if let Some(flow) = s
            .check(
                "client-reaches-database-via-dnat",
                client_reaches_database(&guest, false),
            )
            .await
        {
            s.flow(flow);
        }
        sql_checks(settings, s, &guest, &image, cast.as_ref()).await;
        if prepared {
            s.check(
                "container-has-no-tenant-nic",
                container_has_no_tenant_nic(&guest),
            )
            .await;
        }
        s.check(
            "guest-keeps-tenant-nic",
            guest_keeps_tenant_nic(settings, &guest),
        )
        .await;
    }
    if !prepared {
        s.not_run(
            "image-pull-via-mgmt0",
            "no image pulled: prepare did not end healthy",
        );
    } else if let Some(flow) = s
        .check("image-pull-via-mgmt0", async {
            image_pull_via_mgmt(before, after, image.published.unique_layer_bytes())
        })
        .await
    {
        s.flow(flow);
    }
    management_flows_and_cleanup(settings, s, guest).await;
    drop(image);
}

/// The last two checks of a scenario that got its guest up: RabbitMQ through `mgmt0` (its
/// flows go into the report), then the clean-up that consumes the guest.
async fn management_flows_and_cleanup(
    settings: &Settings,
    s: &mut ScenarioReport<'_>,
    guest: Guest,
) {
    if let Some(flows) = s
        .check("rabbitmq-via-mgmt0", async {
            rabbitmq_via_mgmt(settings, &guest)
        })
        .await
    {
        for flow in flows {
            s.flow(flow);
        }
    }
    s.check("cleanup", cleanup(settings, guest)).await;
}

async fn agent_answers(guest: &Guest) -> Result<((), String)> {
    let waited = guest.answer_rpc_ping(AGENT_START_LIMIT).await?;
    Ok((
        (),
        format!(
            "rpc_ping answered true {} ms after start",
            waited.as_millis()
        ),
    ))
}

/// After start-up (RPC answers), before the database: the tenant NIC is still in the VM but
/// down, without addresses or routes.
async fn startup_isolation(guest: &Guest) -> Result<((), String)> {
    let mac = guest.tenant().mac;
    let Some(nic) = guest.tenant_nic_bare_in_vm()? else {
        return Ok(((), format!("the tenant NIC {mac} is not in the VM at all")));
    };
    ensure!(!nic.up, "tenant NIC {} is up after start-up", nic.name);
    Ok((
        (),
        format!("{} ({mac}) down, no address, no route", nic.name),
    ))
}

/// Casts `prepare` and waits for the `healthy` heartbeat.
pub(crate) async fn prepare(guest: &Guest) -> Result<(PrepareCast, String)> {
    let cast = guest.prepare_until_healthy(PREPARE_LIMIT).await?;
    let detail = format!("conductor got {:?}", cast.events);
    Ok((cast, detail))
}

/// The client connects to the tenant address and gets MariaDB's greeting; the container's own
/// socket table tells whether it came directly (isolated) or through DNAT (bridged).
async fn client_reaches_database(guest: &Guest, direct: bool) -> Result<(String, String)> {
    let client = guest.tenant().client()?;
    let target = SocketAddr::new(IpAddr::V4(GUEST_TENANT_ADDR), DATABASE_PORT);
    let mut last = String::from("no attempt");
    let stream = wait_for(Duration::from_secs(15), || {
        let attempt = connect_in(&client, target, Duration::from_secs(2));
        let result = match attempt {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                last = e.to_string();
                None
            }
            Err(e) => {
                last = format!("{e:#}");
                None
            }
        };
        async move { result }
    })
    .await;
    let mut stream = stream.ok_or_else(|| anyhow!("client cannot connect to {target}: {last}"))?;
    let version = mariadb_greeting(&mut stream)?;
    let from = stream.local_addr()?;
    let namespace = container_netns(guest.runtime.as_ref(), DATABASE_CONTAINER).await?;
    let seen = established_in(&namespace)?
        .into_iter()
        .find(|c| c.remote == from && c.local.port() == DATABASE_PORT)
        .ok_or_else(|| anyhow!("the container's TCP table has no connection from {from}"))?;
    let (links, addresses) = links_and_addresses(&namespace)?;
    let ifname = link_of_address(&links, &addresses, seen.local.ip()).unwrap_or_else(|| "?".into());
    if direct {
        ensure!(
            seen.local == target,
            "the container saw the connection on {} instead of {target}",
            seen.local
        );
        Ok((
            format!("client {from} -> {target} database container {ifname} (direct)"),
            format!(
                "greeting from {version}; the container's socket {} on {ifname}",
                seen.local
            ),
        ))
    } else {
        ensure!(
            seen.local != target,
            "the container owns {target} itself: no DNAT happened"
        );
        Ok((
            format!(
                "client {from} -> {target} guest VM tenant NIC -> DNAT -> {} database container {ifname} (bridge)",
                seen.local
            ),
            format!(
                "greeting from {version}; DNAT {target} -> {} on the container's {ifname}",
                seen.local
            ),
        ))
    }
}

/// The tenant's application over the tenant network: a row written and read back as the
/// user `prepare` created, the row still there after `restart`, and the `max_connections` of
/// `start_db_with_conf_changes` seen by the client where `prepare`'s was before.
async fn sql_checks(
    settings: &Settings,
    s: &mut ScenarioReport<'_>,
    guest: &Guest,
    image: &TestImage,
    cast: Option<&PrepareCast>,
) {
    let Some(cast) = cast else {
        mark_not_run(s, SQL_CHECKS, "no database: prepare did not end healthy");
        return;
    };
    let marker = format!("netiso-harness {}", guest.spec.guest_id);
    let Some((flow, login_after)) = s
        .check(
            "sql-round-trip-as-prepared-user",
            sql_round_trip(guest, &marker, cast.at),
        )
        .await
    else {
        mark_not_run(s, &SQL_CHECKS[1..], "the tenant could not write its row");
        return;
    };
    s.flow(flow);
    if let Some(file) = &settings.measurements {
        s.check("measurements", async {
            let line = measure(guest, &image.tag, cast.healthy_after, login_after).await?;
            append_line(file, &line)?;
            Ok(((), line))
        })
        .await;
    }
    s.check("restart-keeps-the-row", restart_keeps_row(guest, &marker))
        .await;
    s.check(
        "conf-changes-visible-to-client",
        conf_changes_visible(guest, image, &marker),
    )
    .await;
}

/// The row the tenant wrote, read back by the tenant.
fn read_row(guest: &Guest) -> Result<String> {
    guest.tenant_sql("SELECT note FROM notes WHERE id = 1")
}

/// Returns the flow and the time from the `prepare` cast to the first login.
async fn sql_round_trip(
    guest: &Guest,
    marker: &str,
    cast_at: Instant,
) -> Result<((String, Duration), String)> {
    let server = guest.database_address();
    let netns = guest.client_netns();
    let (waited, user) = guest.first_tenant_login(LOGIN_LIMIT)?;
    let login_after = cast_at.elapsed();
    guest.tenant_sql(&format!(
        "CREATE TABLE notes (id INT PRIMARY KEY, note VARCHAR(128)); \
         INSERT INTO notes VALUES (1, '{marker}');"
    ))?;
    let read = read_row(guest)?;
    ensure!(read == marker, "read back {read:?} instead of {marker:?}");
    Ok((
        (
            format!(
                "client {CLIENT_ADDR} -> {server} MariaDB as {user} (created by prepare): row written and read back"
            ),
            login_after,
        ),
        format!(
            "`mariadb` in {netns}: first login as {user} {} ms after healthy ({} ms after the prepare cast); row written and read back",
            waited.as_millis(),
            login_after.as_millis()
        ),
    ))
}

/// One measurement line: the timings and the resident memory of the agent and of the
/// database's main process (mariadbd) right after the first login.
async fn measure(
    guest: &Guest,
    tag: &str,
    healthy_after: Duration,
    login_after: Duration,
) -> Result<String> {
    let agent = rss_kib(guest.agent_pid()?)?;
    let database = guest
        .runtime
        .inspect(DATABASE_CONTAINER)
        .await?
        .and_then(|info| info.pid)
        .ok_or_else(|| anyhow!("the database container has no running process"))?;
    let line = json!({
        "runtime": guest.spec.runtime.as_str(),
        "isolated": guest.spec.isolated,
        "image_tag": tag,
        "prepare_to_healthy_ms": u64::try_from(healthy_after.as_millis())?,
        "prepare_to_login_ms": u64::try_from(login_after.as_millis())?,
        "agent_rss_kib": agent,
        "database_rss_kib": rss_kib(database)?,
    });
    Ok(line.to_string())
}

fn append_line(file: &std::path::Path, line: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    writeln!(out, "{line}").with_context(|| format!("writing {}", file.display()))
}

async fn restart_keeps_row(guest: &Guest, marker: &str) -> Result<((), String)> {
    let started = Instant::now();
    guest
        .controller()
        .call("restart", json!({}), PREPARE_LIMIT)
        .await
        .map_err(|e| e.context(format!("agent log: {}", guest.agent_log_tail())))?;
    let answered = started.elapsed();
    let (waited, _) = guest.first_tenant_login(LOGIN_LIMIT)?;
    let read = read_row(guest)?;
    ensure!(read == marker, "after restart the row reads {read:?}");
    Ok((
        (),
        format!(
            "restart answered in {} ms; the tenant logged in again {} ms later and read its row",
            answered.as_millis(),
            waited.as_millis()
        ),
    ))
}

async fn conf_changes_visible(
    guest: &Guest,
    image: &TestImage,
    marker: &str,
) -> Result<((), String)> {
    let show = "SHOW VARIABLES LIKE 'max_connections'";
    let before = guest.tenant_sql(show)?;
    ensure!(
        before == format!("max_connections\t{PREPARED_MAX_CONNECTIONS}"),
        "prepare's config_contents did not take effect: {before:?}"
    );
    let controller = guest.controller();
    let started = Instant::now();
    controller
        .call("stop_db", json!({}), Duration::from_secs(60))
        .await?;
    controller
        .call(
            "start_db_with_conf_changes",
            json!({
                "config_contents": mariadb_config(SERVER_ID, CHANGED_MAX_CONNECTIONS),
                "ds_version": image.tag,
            }),
            PREPARE_LIMIT,
        )
        .await
        .map_err(|e| e.context(format!("agent log: {}", guest.agent_log_tail())))?;
    guest.first_tenant_login(LOGIN_LIMIT)?;
    let after = guest.tenant_sql(show)?;
    ensure!(
        after == format!("max_connections\t{CHANGED_MAX_CONNECTIONS}"),
        "after start_db_with_conf_changes the client sees {after:?}"
    );
    let read = read_row(guest)?;
    ensure!(
        read == marker,
        "after the new config the row reads {read:?}"
    );
    Ok((
        (),
        format!(
            "SHOW VARIABLES as the tenant: max_connections {PREPARED_MAX_CONNECTIONS} (prepare) -> {CHANGED_MAX_CONNECTIONS} after stop_db + start_db_with_conf_changes ({} ms); row kept",
            started.elapsed().as_millis()
        ),
    ))
}

async fn isolation_checks(
    settings: &Settings,
    s: &mut ScenarioReport<'_>,
    guest: &Guest,
    prepared: bool,
) {
    let mac = guest.tenant().mac;
    let read = GuestView::read(&settings.guest_netns).map_err(|e| format!("{e:#}"));
    let view = read.as_ref();
    s.check("guest-has-no-tenant-nic", async {
        let view = view.map_err(|e| anyhow!("{e}"))?;
        match view.link_with_mac(mac) {
            Some(link) => bail!("{} ({mac}) is in the guest namespace", link.name),
            None => Ok((
                (),
                format!("no link with {mac}; links: {}", view.link_names()),
            )),
        }
    })
    .await;
    s.check("guest-has-no-tenant-address", async {
        let view = view.map_err(|e| anyhow!("{e}"))?;
        let found = view.tenant_addresses();
        ensure!(found.is_empty(), "tenant addresses in the guest: {found:?}");
        Ok(((), "no address in 10.252.0.0/24, fd00:252::/64".to_owned()))
    })
    .await;
    s.check("guest-has-no-tenant-route", async {
        let view = view.map_err(|e| anyhow!("{e}"))?;
        let found = view.tenant_routes(None);
        ensure!(found.is_empty(), "tenant routes in the guest: {found:?}");
        match &view.route_to_client {
            Ok(route) => bail!("the kernel routes {CLIENT_ADDR} via {route}"),
            Err(e) => Ok(((), format!("no tenant route; route get {CLIENT_ADDR}: {e}"))),
        }
    })
    .await;
    s.check("guest-has-no-tenant-default-route", async {
        let view = view.map_err(|e| anyhow!("{e}"))?;
        let found = view.tenant_default_routes(None);
        ensure!(found.is_empty(), "tenant default routes: {found:?}");
        Ok(((), format!("default routes: {:?}", view.default_routes())))
    })
    .await;
    s.check("guest-cannot-reach-client", async {
        let client = guest.tenant().client()?;
        let listener = listen_in(&client, SocketAddr::new(IpAddr::V4(CLIENT_ADDR), 0))?;
        let guest_ns = Namespace::open(&settings.guest_netns)?;
        let detail = expect_unreachable(&guest_ns, listener.local_addr()?, UNREACHABLE_PROBE)?;
        Ok(((), detail))
    })
    .await;
    s.check("client-cannot-reach-guest-mgmt", async {
        let guest_ns = Namespace::open(&settings.guest_netns)?;
        let listener = listen_in(
            &guest_ns,
            SocketAddr::new(IpAddr::V4(settings.guest_mgmt_addr), 0),
        )?;
        let client = guest.tenant().client()?;
        Ok((
            (),
            expect_unreachable(&client, listener.local_addr()?, UNREACHABLE_PROBE)?,
        ))
    })
    .await;
    s.check("client-cannot-reach-broker", async {
        let client = guest.tenant().client()?;
        let broker = SocketAddr::new(IpAddr::from(MGMT_GATEWAY), 5672);
        Ok(((), expect_unreachable(&client, broker, UNREACHABLE_PROBE)?))
    })
    .await;
    if !prepared {
        s.not_run(
            "container-has-only-lo-and-eth0",
            "no database: prepare did not end healthy",
        );
        return;
    }
    s.check("container-has-only-lo-and-eth0", async {
        let links = container_links(guest.runtime.as_ref(), DATABASE_CONTAINER).await?;
        let mut names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        names.sort_unstable();
        ensure!(names == ["eth0", "lo"], "the container's links: {names:?}");
        let eth0 = links.iter().find(|l| l.name == "eth0");
        ensure!(
            eth0.and_then(|l| l.mac) == Some(mac),
            "the container's eth0 is not the tenant NIC {mac}: {:?}",
            eth0.and_then(|l| l.mac)
        );
        Ok(((), format!("links lo, eth0 ({mac}, the tenant NIC)")))
    })
    .await;
}

async fn container_has_no_tenant_nic(guest: &Guest) -> Result<((), String)> {
    let mac = guest.tenant().mac;
    let links = container_links(guest.runtime.as_ref(), DATABASE_CONTAINER).await?;
    let names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
    ensure!(
        links.iter().all(|l| l.mac != Some(mac)),
        "the tenant NIC {mac} is in the container: {names:?}"
    );
    Ok(((), format!("container links {names:?}, none is {mac}")))
}

async fn guest_keeps_tenant_nic(settings: &Settings, guest: &Guest) -> Result<((), String)> {
    let view = GuestView::read(&settings.guest_netns)?;
    let mac = guest.tenant().mac;
    let nic = view
        .link_with_mac(mac)
        .ok_or_else(|| anyhow!("the tenant NIC {mac} left the VM"))?;
    let addresses = view.tenant_addresses();
    let defaults = view.tenant_default_routes(Some(nic.index));
    ensure!(
        nic.up && !addresses.is_empty() && !defaults.is_empty(),
        "bridged mode must keep the VM's tenant configuration: up={} addresses {addresses:?} default routes {defaults:?}",
        nic.up
    );
    Ok(((), format!("{} up, {addresses:?}, {defaults:?}", nic.name)))
}

/// mgmt0 in the guest, and the client's end of the tenant link (which stays put wherever
/// the guest's end goes).
fn traffic_counters(settings: &Settings, guest: &Guest) -> Result<(Counters, Counters)> {
    let guest_ns = Namespace::open(&settings.guest_netns)?;
    let mgmt = counters(&guest_ns, &settings.guest_mgmt_if)?;
    let client_if = format!("nthc{}", std::process::id() % 100_000);
    let tenant = counters(&guest.tenant().client()?, &client_if)?;
    Ok((mgmt, tenant))
}

/// `unique_bytes` is what only this scenario's image holds: the least a real pull downloads,
/// whatever the runtime already had of the MariaDB layer below it.
fn image_pull_via_mgmt(
    before: Option<(Counters, Counters)>,
    after: Option<(Counters, Counters)>,
    unique_bytes: u64,
) -> Result<(String, String)> {
    let ((mgmt0, tenant0), (mgmt1, tenant1)) = before
        .zip(after)
        .ok_or_else(|| anyhow!("the interface counters could not be read"))?;
    let mgmt_rx = mgmt1.rx_bytes.saturating_sub(mgmt0.rx_bytes);
    let tenant_bytes =
        (tenant1.rx_bytes + tenant1.tx_bytes).saturating_sub(tenant0.rx_bytes + tenant0.tx_bytes);
    ensure!(
        mgmt_rx >= unique_bytes,
        "mgmt0 received {mgmt_rx} bytes during prepare, less than the scenario's own layer of {unique_bytes}: the pull did not come through the management NIC"
    );
    ensure!(
        tenant_bytes < unique_bytes / 4,
        "the tenant link carried {tenant_bytes} bytes during prepare (the scenario's layer {unique_bytes})"
    );
    Ok((
        format!(
            "guest mgmt0 <- 10.251.0.1:5000 registry: image pull, mgmt0 received {mgmt_rx} bytes (scenario layer {unique_bytes} bytes), tenant link {tenant_bytes} bytes"
        ),
        format!(
            "mgmt0 rx +{mgmt_rx} bytes >= the scenario's own layer {unique_bytes} bytes; tenant link +{tenant_bytes} bytes"
        ),
    ))
}

fn rabbitmq_via_mgmt(settings: &Settings, guest: &Guest) -> Result<(Vec<String>, String)> {
    let pid = guest.agent_pid()?;
    let connections: Vec<_> = established_of_pid(pid)?
        .into_iter()
        .filter(|c| c.remote.port() == 5672)
        .collect();
    ensure!(
        !connections.is_empty(),
        "the agent (pid {pid}) has no AMQP connection"
    );
    let guest_ns = Namespace::open(&settings.guest_netns)?;
    let (links, addresses) = links_and_addresses(&guest_ns)?;
    let mut flows = Vec::new();
    for c in &connections {
        let ifname =
            link_of_address(&links, &addresses, c.local.ip()).unwrap_or_else(|| "?".into());
        ensure!(
            ifname == settings.guest_mgmt_if && c.remote.ip() == IpAddr::from(MGMT_GATEWAY),
            "AMQP connection {} -> {} leaves through {ifname}",
            c.local,
            c.remote
        );
        flows.push(format!(
            "guest {ifname} {} -> {} RabbitMQ (agent pid {pid})",
            c.local, c.remote
        ));
    }
    let detail = flows.join("; ");
    Ok((flows, detail))
}

/// Tears the guest down and checks nothing is left.
async fn cleanup(settings: &Settings, guest: Guest) -> Result<((), String)> {
    let mac = guest.tenant().mac;
    let client_netns = guest.tenant().client_netns.clone();
    let root = guest.files.root.clone();
    let runtime = guest.runtime.clone();
    let done = guest.teardown().await?;
    ensure!(
        runtime.inspect(DATABASE_CONTAINER).await?.is_none(),
        "the database container is still there"
    );
    ensure!(
        !std::path::Path::new("/run/netns")
            .join(&client_netns)
            .exists(),
        "namespace {client_netns} is still there"
    );
    let view = GuestView::read(&settings.guest_netns)?;
    ensure!(
        view.link_with_mac(mac).is_none(),
        "the tenant NIC {mac} is still in the guest"
    );
    ensure!(!root.exists(), "{} is still there", root.display());
    Ok(((), done))
}

const FAULT_CHECKS: &[&str] = &[
    "agent-answers-rpc_ping",
    "agent-killed-mid-prepare",
    "agent-restarted-while-running",
    "rpc-lifecycle",
    "dockerd-restarted",
    "rabbitmq-restarted",
    "guard-reisolates-returned-nic",
    "cleanup",
];

/// Docker, isolated: the agent, dockerd and RabbitMQ restarted, a NIC returned.
async fn faults(settings: &Settings, s: &mut ScenarioReport<'_>, serial: u32) {
    let plan = plan("docker-faults", serial, RuntimeKind::Docker, true);
    let Some((image, mut guest)) = set_up(settings, s, plan, FAULT_CHECKS).await else {
        return;
    };
    s.check("agent-answers-rpc_ping", agent_answers(&guest))
        .await;
    s.check(
        "agent-killed-mid-prepare",
        agent_killed_mid_prepare(&mut guest),
    )
    .await;
    s.check(
        "agent-restarted-while-running",
        agent_restarted_while_running(settings, &mut guest),
    )
    .await;
    s.check("rpc-lifecycle", rpc_lifecycle(&guest, &image))
        .await;
    s.check("dockerd-restarted", dockerd_restarted(settings, &guest))
        .await;
    s.check("rabbitmq-restarted", rabbitmq_restarted(settings, &guest))
        .await;
    s.check(
        "guard-reisolates-returned-nic",
        guard_reisolates(settings, &guest),
    )
    .await;
    s.check("cleanup", cleanup(settings, guest)).await;
    drop(image);
}

/// The database answers the client with the tenant NIC in the container, exactly one
/// container exists; returns the container id.
async fn database_serves(guest: &Guest) -> Result<String> {
    client_reaches_database(guest, true).await?;
    let containers = guest.runtime.list().await?;
    let named = containers
        .iter()
        .filter(|c| {
            c.names
                .iter()
                .any(|n| n.trim_start_matches('/') == DATABASE_CONTAINER)
        })
        .count();
    ensure!(
        named == 1,
        "{named} containers named `{DATABASE_CONTAINER}`"
    );
    let info = guest
        .runtime
        .inspect(DATABASE_CONTAINER)
        .await?
        .ok_or_else(|| anyhow!("no database container"))?;
    let links = container_links(guest.runtime.as_ref(), DATABASE_CONTAINER).await?;
    let mac = guest.tenant().mac;
    ensure!(
        links.iter().any(|l| l.name == "eth0" && l.mac == Some(mac)),
        "the container has no eth0 with the tenant NIC {mac}"
    );
    Ok(info.id)
}

async fn agent_killed_mid_prepare(guest: &mut Guest) -> Result<((), String)> {
    let mark = guest.controller().mark();
    guest
        .controller()
        .cast("prepare", guest.prepare_args())
        .await?;
    guest
        .controller()
        .wait_event(mark, Duration::from_secs(30), |e| {
            *e == ConductorEvent::Heartbeat("building".into())
        })
        .await
        .context("waiting for the `building` heartbeat")?;
    let killed = Instant::now();
    if let Some(agent) = guest.agent.as_mut() {
        agent.kill_hard();
    }
    let existed = guest.runtime.inspect(DATABASE_CONTAINER).await?.is_some();
    guest.start_agent()?;
    guest
        .controller()
        .ping_until_answered(AGENT_START_LIMIT)
        .await
        .map_err(|e| e.context(format!("agent log: {}", guest.agent_log_tail())))?;
    let answered = killed.elapsed();
    // The prepare died with the agent before the root password was kept, so nothing can
    // start the database but another prepare (the taskmanager's retry); it must converge on
    // one database, reusing whatever the first attempt left.
    let mark = guest.controller().mark();
    guest
        .controller()
        .cast("prepare", guest.prepare_args())
        .await?;
    let outcome = guest
        .controller()
        .wait_event(mark, PREPARE_LIMIT, |e| {
            matches!(e, ConductorEvent::Heartbeat(s) if s == "healthy" || s == "failed to spawn")
        })
        .await
        .map_err(|e| e.context(format!("agent log: {}", guest.agent_log_tail())))?;
    ensure!(
        outcome == ConductorEvent::Heartbeat("healthy".into()),
        "the second prepare ended {outcome:?}; agent log: {}",
        guest.agent_log_tail()
    );
    let id = database_serves(guest).await?;
    Ok((
        (),
        format!(
            "SIGKILL after `building` (container {} then); new agent answered in {} ms; a second prepare converged on one container {}",
            if existed {
                "created"
            } else {
                "not created yet"
            },
            answered.as_millis(),
            &id[..id.len().min(12)]
        ),
    ))
}

async fn agent_restarted_while_running(
    settings: &Settings,
    guest: &mut Guest,
) -> Result<((), String)> {
    let before = database_serves(guest).await?;
    if let Some(agent) = guest.agent.as_mut() {
        agent.stop(Duration::from_secs(20));
    }
    guest.start_agent()?;
    let waited = guest
        .controller()
        .ping_until_answered(AGENT_START_LIMIT)
        .await
        .map_err(|e| e.context(format!("agent log: {}", guest.agent_log_tail())))?;
    let after = database_serves(guest).await?;
    ensure!(
        before == after,
        "the container changed: {before} -> {after}"
    );
    let view = GuestView::read(&settings.guest_netns)?;
    ensure!(
        view.link_with_mac(guest.tenant().mac).is_none() && view.tenant_addresses().is_empty(),
        "the guest regained the tenant NIC after the agent restart"
    );
    Ok((
        (),
        format!(
            "agent answered {} ms after restart; same container, client still served, VM still isolated",
            waited.as_millis()
        ),
    ))
}

/// The other guest methods over RPC: filesystem stats, `stop_db` (the container stops, the
/// NIC goes back to the VM and the client loses the database), `start_db_with_conf_changes`
/// (the NIC is handed over again) and `restart`.
async fn rpc_lifecycle(guest: &Guest, image: &TestImage) -> Result<((), String)> {
    let controller = guest.controller();
    let stats = controller
        .call(
            "get_filesystem_stats",
            json!({"fs_path": null}),
            Duration::from_secs(10),
        )
        .await?;
    let blocks = stats
        .get("total_blocks")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| anyhow!("get_filesystem_stats answered {stats}"))?;
    let started = Instant::now();
    let mark = controller.mark();
    controller
        .call("stop_db", json!({}), Duration::from_secs(60))
        .await?;
    controller
        .wait_event(mark, Duration::from_secs(10), |e| {
            *e == ConductorEvent::Heartbeat("shutdown".into())
        })
        .await?;
    let stopped = started.elapsed();
    let client = guest.tenant().client()?;
    let target = SocketAddr::new(IpAddr::V4(GUEST_TENANT_ADDR), DATABASE_PORT);
    if let Ok(Ok(_)) = connect_in(&client, target, Duration::from_secs(1)) {
        bail!("the client still reaches {target} after stop_db");
    }
    let started = Instant::now();
    controller
        .call(
            "start_db_with_conf_changes",
            json!({
                "config_contents": mariadb_config(SERVER_ID, PREPARED_MAX_CONNECTIONS),
                "ds_version": image.tag,
            }),
            PREPARE_LIMIT,
        )
        .await?;
    database_serves(guest).await?;
    let restarted = started.elapsed();
    let started = Instant::now();
    controller.call("restart", json!({}), PREPARE_LIMIT).await?;
    database_serves(guest).await?;
    Ok((
        (),
        format!(
            "get_filesystem_stats {blocks} blocks; stop_db {} ms (client cut off); start_db_with_conf_changes {} ms; restart {} ms; NIC handed over each time",
            stopped.as_millis(),
            restarted.as_millis(),
            started.elapsed().as_millis()
        ),
    ))
}

async fn dockerd_restarted(settings: &Settings, guest: &Guest) -> Result<((), String)> {
    let before = database_serves(guest).await?;
    let command = DaemonCommand::read(&settings.dockerd_pid_file, &settings.guest_netns)?;
    let log = std::path::PathBuf::from("/var/log/trove-netiso/dockerd.log");
    let _guard = DockerdGuard::new(command.clone(), &settings.docker_socket, &log);
    let started = Instant::now();
    command.terminate(Duration::from_secs(60))?;
    command.start(&log)?;
    let socket = settings.docker_socket.clone();
    wait_for(Duration::from_secs(60), || {
        let up = dockerd_answers(&socket);
        async move { up.then_some(()) }
    })
    .await
    .ok_or_else(|| anyhow!("dockerd did not answer within 60 s of its restart"))?;
    let answering = started.elapsed();
    let runtime = guest.runtime.clone();
    wait_for(Duration::from_secs(60), || {
        let runtime = runtime.clone();
        async move {
            match runtime.inspect(DATABASE_CONTAINER).await {
                Ok(Some(info)) if info.status == ContainerStatus::Running => Some(()),
                _ => None,
            }
        }
    })
    .await
    .ok_or_else(|| anyhow!("the database container is not running 60 s after dockerd came back"))?;
    let after = database_serves(guest).await?;
    ensure!(
        before == after,
        "the container changed: {before} -> {after}"
    );
    Ok((
        (),
        format!(
            "dockerd answered after {} ms; container back with its NIC after {} ms; client served",
            answering.as_millis(),
            started.elapsed().as_millis()
        ),
    ))
}

async fn rabbitmq_restarted(settings: &Settings, guest: &Guest) -> Result<((), String)> {
    let guard = RabbitGuard::stop_app(&settings.rabbit_node)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    drop(guard);
    let waited = guest
        .controller()
        .ping_until_answered(Duration::from_secs(120))
        .await
        .map_err(|e| e.context(format!("agent log: {}", guest.agent_log_tail())))?;
    let answered = waited.max(restarted.elapsed());
    // The new connection must leave through the management NIC too.
    let (flows, _) = rabbitmq_via_mgmt(settings, guest)?;
    Ok((
        (),
        format!(
            "broker down 2 s; agent answered rpc_ping {} ms after start_app was issued; reconnected as {}",
            answered.as_millis(),
            flows.join("; ")
        ),
    ))
}

/// The container is removed (Docker returns the NIC to the VM), then the NIC is brought
/// up with its address as cloud-init or DHCP would: the agent's guard must take it away.
async fn guard_reisolates(settings: &Settings, guest: &Guest) -> Result<((), String)> {
    let mac = guest.tenant().mac;
    guest.runtime.remove(DATABASE_CONTAINER, true).await?;
    let netns = settings.guest_netns.clone();
    let returned = wait_for(Duration::from_secs(15), || {
        let found = GuestView::read(&netns)
            .ok()
            .and_then(|v| v.link_with_mac(mac).map(|l| l.index));
        async move { found }
    })
    .await
    .ok_or_else(|| anyhow!("the tenant NIC {mac} did not come back to the VM"))?;
    let handle = NetlinkHandle::in_named(&settings.guest_netns)?;
    let started = Instant::now();
    handle.set_link_up(returned, true)?;
    handle.add_address(returned, "10.252.0.10/24".parse()?)?;
    let settled = wait_for(Duration::from_secs(15), || {
        let isolated = GuestView::read(&netns).ok().is_some_and(|v| {
            v.link_with_mac(mac).is_none_or(|l| !l.up)
                && v.tenant_addresses().is_empty()
                && v.tenant_routes(Some(returned)).is_empty()
        });
        async move { isolated.then_some(()) }
    })
    .await;
    settled.ok_or_else(|| {
        anyhow!(
            "15 s after the NIC came up with 10.252.0.10/24 the guard had not taken it away; agent log: {}",
            guest.agent_log_tail()
        )
    })?;
    Ok((
        (),
        format!(
            "NIC returned by the removed container, brought up with its address: re-isolated in {} ms",
            started.elapsed().as_millis()
        ),
    ))
}

const IMPOSSIBLE_CHECKS: &[&str] = &[
    "startup-reports-failed-to-spawn",
    "agent-answers-rpc_ping",
    "prepare-refused",
    "no-database-on-vm",
    "cleanup",
];

/// `eth1.json` names a MAC no NIC has: the agent must fail closed.
async fn impossible(settings: &Settings, s: &mut ScenarioReport<'_>, serial: u32) {
    let plan = GuestPlan {
        absent_mac: true,
        ..plan("isolation-impossible", serial, RuntimeKind::Docker, true)
    };
    let Some((image, guest)) = set_up(settings, s, plan, IMPOSSIBLE_CHECKS).await else {
        return;
    };
    s.check(
        "startup-reports-failed-to-spawn",
        startup_reports_failed_to_spawn(&guest, None),
    )
    .await;
    s.check("agent-answers-rpc_ping", agent_answers(&guest))
        .await;
    s.check("prepare-refused", prepare_refused(&guest, None))
        .await;
    s.check("no-database-on-vm", no_database_on_vm(&guest, "dockerd"))
        .await;
    s.check("cleanup", cleanup(settings, guest)).await;
    drop(image);
}

const CONTAINERD_BRIDGED_CHECKS: &[&str] = &[
    "startup-reports-unsupported",
    "agent-answers-rpc_ping",
    "prepare-refused-unsupported",
    "no-database-on-vm",
    "guest-keeps-tenant-nic",
    "rabbitmq-via-mgmt0",
    "cleanup",
];

/// What the agent's reason for refusing containerd's bridged mode must say.
const CONTAINERD_BRIDGED_REASON: &str = "unsupported with containerd";

/// containerd, `network_isolation = False`: deliberately unsupported. The agent says so at
/// start-up (`failed to spawn`, the reason in its log) and on `prepare` (`failed to spawn`
/// and `notify_exc_info` naming the reason), starts no database, and, the mode not being
/// isolated, leaves the VM its tenant NIC.
async fn containerd_bridged(settings: &Settings, s: &mut ScenarioReport<'_>, serial: u32) {
    let plan = plan("containerd-bridged", serial, RuntimeKind::Containerd, false);
    let Some((image, guest)) = set_up(settings, s, plan, CONTAINERD_BRIDGED_CHECKS).await else {
        return;
    };
    s.check(
        "startup-reports-unsupported",
        startup_reports_failed_to_spawn(&guest, Some(CONTAINERD_BRIDGED_REASON)),
    )
    .await;
    s.check("agent-answers-rpc_ping", agent_answers(&guest))
        .await;
    s.check(
        "prepare-refused-unsupported",
        prepare_refused(&guest, Some(CONTAINERD_BRIDGED_REASON)),
    )
    .await;
    s.check("no-database-on-vm", no_database_on_vm(&guest, "containerd"))
        .await;
    s.check(
        "guest-keeps-tenant-nic",
        guest_keeps_tenant_nic(settings, &guest),
    )
    .await;
    management_flows_and_cleanup(settings, s, guest).await;
    drop(image);
}

/// The `failed to spawn` heartbeat the agent sends once RPC is up, before any request;
/// with `reason`, the agent's log must also give that reason at start-up.
async fn startup_reports_failed_to_spawn(
    guest: &Guest,
    reason: Option<&str>,
) -> Result<((), String)> {
    let event = guest
        .controller()
        .wait_event(0, AGENT_START_LIMIT, |e| {
            *e == ConductorEvent::Heartbeat("failed to spawn".into())
        })
        .await
        .map_err(|e| e.context(format!("agent log: {}", guest.agent_log_tail())))?;
    let Some(reason) = reason else {
        return Ok(((), format!("conductor got {event:?}")));
    };
    let log_path = guest.files.log("agent");
    let log = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading the agent log {}", log_path.display()))?;
    let line = log.lines().find(|l| l.contains(reason)).ok_or_else(|| {
        anyhow!(
            "the agent's log does not say \"{reason}\"; agent log: {}",
            guest.agent_log_tail()
        )
    })?;
    Ok((
        (),
        format!("conductor got {event:?} before any request; agent log: {line}"),
    ))
}

/// `prepare` ends `failed to spawn` with a `notify_exc_info` (naming `reason` when given),
/// never `healthy`.
async fn prepare_refused(guest: &Guest, reason: Option<&str>) -> Result<((), String)> {
    let controller = guest.controller();
    let mark = controller.mark();
    controller.cast("prepare", guest.prepare_args()).await?;
    controller
        .wait_event(mark, Duration::from_secs(60), |e| {
            *e == ConductorEvent::Heartbeat("failed to spawn".into())
        })
        .await?;
    let exc_info = controller
        .wait_event(mark, Duration::from_secs(10), |e| {
            matches!(e, ConductorEvent::NotifyExcInfo(_))
        })
        .await?;
    let events = controller.events_since(mark);
    ensure!(
        !events.contains(&ConductorEvent::Heartbeat("healthy".into())),
        "the guest reported healthy: {events:?}"
    );
    if let Some(reason) = reason {
        ensure!(
            matches!(&exc_info, ConductorEvent::NotifyExcInfo(message) if message.contains(reason)),
            "notify_exc_info does not say \"{reason}\": {exc_info:?}"
        );
    }
    Ok(((), format!("`failed to spawn`, then {exc_info:?}")))
}

/// The runtime the agent drives has no database container.
async fn no_database_on_vm(guest: &Guest, runtime: &str) -> Result<((), String)> {
    let info = guest.runtime.inspect(DATABASE_CONTAINER).await?;
    ensure!(info.is_none(), "a database container exists: {info:?}");
    Ok((
        (),
        format!("no `{DATABASE_CONTAINER}` container in the guest's {runtime}"),
    ))
}
