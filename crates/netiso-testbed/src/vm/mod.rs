//! The harness as a cloud around a real guest VM: it boots the guest image (`cargo xtask
//! guest-image`) under QEMU with a management and a tenant network of its own, injects the
//! files as Trove's taskmanager does (cloud-init `write_files`), plays the taskmanager and
//! the conductor over RPC on the management side only, and checks from the tenant side and
//! from inside the VM (through the QEMU guest agent) that the promises hold on a booted
//! system: systemd, cloud-init, DHCP, reboots.

mod net;
mod qemu;
mod qga;
mod seed;
mod window;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use netiso_config::render::{FixedIp, GuestInfo, UserPort, render_daemon_json};
use netiso_config::{ControlPlaneConfig, Secret};
use serde_json::Value;

use crate::controller::{ConductorEvent, Controller, prepare_args};
use crate::guest_files::{DATABASE_PORT, DATASTORE, RuntimeKind};
use crate::image::{MARIADB_REPOSITORY, MARIADB_TAG};
use crate::report::ScenarioReport;
use crate::settings::Settings;
use crate::sql::{TenantLogin, mariadb_config};
use crate::trove_guest::{GuestKind, TenantNic, TroveGuest};

pub use qemu::GuestImage;

use self::net::{MGMT_GATEWAY, TENANT_ROUTER, VM_TENANT_ADDR, VmNetwork};
use self::qemu::{Vm, VmSpec};
use self::qga::GuestAgent;
use self::seed::InjectedFile;
use self::window::TenantWatch;

/// Power-on to the guest agent answering (TCG boots in about a minute; a loaded machine
/// takes several).
const BOOT_LIMIT: Duration = Duration::from_secs(420);
/// Power-on to `rpc_ping` answered.
const AGENT_LIMIT: Duration = Duration::from_secs(420);
/// `prepare` cast to `healthy` (an image pull and a fresh MariaDB data directory in TCG).
const PREPARE_LIMIT: Duration = Duration::from_secs(900);
/// A login from the tenant network once the guest said `healthy`.
const LOGIN_LIMIT: Duration = Duration::from_secs(180);
/// Rows the data-path query returns: 1 KiB each as the client prints them (1023 characters
/// and a newline), 64 MiB in all.
const DATA_PATH_ROWS: u64 = 65_536;
/// Data-path runs (the figure is their median).
const DATA_PATH_RUNS: usize = 3;
/// Bound of one data-path run (software emulation moves a few MB per second when loaded).
const DATA_PATH_LIMIT: Duration = Duration::from_secs(300);
/// The units the packages install and the image enables.
const UNITS: [&str; 4] = [
    "docker-hostnic.socket",
    "docker.service",
    "containerd.service",
    "trove-guest-agent.service",
];
/// The units of the reference image: Trove's agent beside Docker and the plugin's socket.
const REFERENCE_UNITS: [&str; 3] = [
    "docker-hostnic.socket",
    "docker.service",
    "guest-agent.service",
];
/// The size of the data volume Trove's agent formats at its start (`[mysql] device_path`,
/// `/dev/vdb`, as Cinder attaches it); qcow2, so only what is written takes space.
const VOLUME_SIZE: &str = "1G";
/// The VM's memory.
const MEMORY_MIB: u32 = 2048;
/// Where the database's data lives in the VM (Trove's `[mysql] mount_point`).
const MOUNT_POINT: &str = "/var/lib/mysql";
/// MariaDB's `server_id` in the rendered configuration.
const SERVER_ID: u32 = 7;
/// `max_connections` in the rendered configuration.
const MAX_CONNECTIONS: u32 = 120;

/// Which VM scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmMode {
    /// Docker, isolated: boot, prepare, window, kill -9, reboot.
    DockerIsolated,
    /// Docker, bridged: the client reaches the database through the VM's address.
    DockerBridged,
    /// containerd, isolated.
    ContainerdIsolated,
    /// Trove's own agent in the reference image, isolated Docker guest's files: boot, the
    /// tenant window, `rpc_ping`, memory (the figures ours are compared with).
    TroveReference,
}

impl VmMode {
    fn runtime(self) -> RuntimeKind {
        match self {
            Self::DockerIsolated | Self::DockerBridged | Self::TroveReference => {
                RuntimeKind::Docker
            }
            Self::ContainerdIsolated => RuntimeKind::Containerd,
        }
    }

    /// The units that must be active once the guest is up.
    fn units(self) -> &'static [&'static str] {
        match self {
            Self::TroveReference => &REFERENCE_UNITS,
            _ => &UNITS,
        }
    }

    /// The agent's unit, whose journal explains a failure.
    fn agent_unit(self) -> &'static str {
        match self {
            Self::TroveReference => "guest-agent",
            _ => "trove-guest-agent",
        }
    }

    fn isolated(self) -> bool {
        !matches!(self, Self::DockerBridged)
    }
}

/// One VM scenario, every check recorded in `s`.
pub async fn run(settings: &Settings, s: &mut ScenarioReport<'_>, name: &str, mode: VmMode) {
    let (image_dir, missing) = if mode == VmMode::TroveReference {
        (
            settings.vm_reference_image.as_deref(),
            "no reference image given (`--vm-reference-image`, built by `cargo xtask guest-image --trove-reference`)",
        )
    } else {
        (
            settings.vm_image.as_deref(),
            "no guest image given (`--vm-image`, built by `cargo xtask guest-image`)",
        )
    };
    let Some(image_dir) = image_dir else {
        s.not_run("boot", missing);
        return;
    };
    let Some(mut run) = s
        .check("setup", async {
            let run = VmGuest::boot(settings, image_dir, name, mode).await?;
            let detail = format!(
                "image {}, namespaces {} and {}",
                image_dir.display(),
                run.network.vm_netns,
                run.network.client_netns
            );
            Ok((run, detail))
        })
        .await
    else {
        return;
    };
    run.checks(s).await;
    if settings.keep_logs {
        eprintln!("VM logs kept in {}", run.dir.path.display());
    }
    run.finish(settings.keep_logs).await;
}

/// The per-run directory, removed on drop unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            // Only the logs: the disk is large and the seed holds the instance key.
            for file in ["disk.qcow2", "seed.iso"] {
                let _ = std::fs::remove_file(self.path.join(file));
            }
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cleanup: removing {}: {e}", self.path.display());
        }
    }
}

/// A guest VM: the guest image booted under QEMU on networks of its own, with Trove's
/// control plane and the tenant's client beside it. Field order is drop order: the VM stops
/// before its network goes, and the controller last.
pub struct VmGuest {
    vm: Vm,
    watch: TenantWatch,
    network: VmNetwork,
    controller: Option<Controller>,
    login: TenantLogin,
    mode: VmMode,
    secrets: Vec<String>,
    dir: RunDir,
}

impl VmGuest {
    /// Boots the image in `image_dir` with the injected files of `mode`: the VM is powered
    /// on, the tenant window is watched from this instant, and nothing is waited for.
    pub async fn boot(
        settings: &Settings,
        image_dir: &Path,
        name: &str,
        mode: VmMode,
    ) -> Result<Self> {
        let image = GuestImage::open(image_dir)?;
        let path = settings.work_dir.join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the old {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let dir = RunDir {
            path,
            keep: settings.keep_logs,
        };
        let network = VmNetwork::create(&dir.path, |port| {
            PathBuf::from(format!("/run/trove-netiso/fwd-{port}.sock"))
        })?;
        let guest_id = uuid::Uuid::new_v4().to_string();
        let key = uuid::Uuid::new_v4().simple().to_string();
        let exchange = format!("netiso-vm-{}", &guest_id[..8]);
        let conductor_queue = format!("netiso-vm-conductor-{}", &guest_id[..8]);
        let controller = Controller::start(
            &settings.broker,
            &exchange,
            &conductor_queue,
            &guest_id,
            &key,
        )
        .await?;
        let login = TenantLogin::create(&dir.path)?;
        let files = injected_files(
            mode,
            &guest_id,
            &key,
            &exchange,
            &conductor_queue,
            network.tenant_mac,
        )?;
        let user_data = seed::user_data(&files);
        let network_config =
            seed::network_config(&[("ens3", network.mgmt_mac), ("ens4", network.tenant_mac)]);
        let seed_image = seed::write_seed(&dir.path, &guest_id, &user_data, &network_config)?;
        // Trove's agent formats and mounts its data volume at start, so its guest gets one.
        let volume = if mode == VmMode::TroveReference {
            Some(qemu::blank_volume(&dir.path, VOLUME_SIZE)?)
        } else {
            None
        };
        let spec = VmSpec {
            netns: network.vm_netns.clone(),
            mgmt_mac: network.mgmt_mac,
            tenant_mac: network.tenant_mac,
            seed: seed_image,
            volume,
            memory_mib: MEMORY_MIB,
        };
        let powered_on = Instant::now();
        let watch = TenantWatch::start(
            &network.client_netns,
            SocketAddr::new(IpAddr::V4(VM_TENANT_ADDR), window::KNOCK_PORT),
            powered_on,
        )?;
        let vm = Vm::start(&image, &spec, &dir.path)?;
        Ok(Self {
            vm,
            watch,
            network,
            controller: Some(controller),
            login,
            mode,
            secrets: vec![key],
            dir,
        })
    }

    fn controller(&self) -> Result<&Controller> {
        self.controller
            .as_ref()
            .ok_or_else(|| anyhow!("the controller is stopped"))
    }

    fn qga(&self) -> &GuestAgent {
        &self.vm.agent
    }

    async fn checks(&mut self, s: &mut ScenarioReport<'_>) {
        if s.check("boots", self.wait_booted()).await.is_none() {
            return;
        }
        s.check("units-active", self.units_active()).await;
        s.check("agent-answers-rpc", self.agent_answers()).await;
        if self.mode == VmMode::TroveReference {
            s.check("tenant-window-trove", self.window_trove()).await;
            s.check("resident-memory", self.resident_memory()).await;
            return;
        }
        s.check("injected-files-private", self.injected_files_private())
            .await;
        if self.mode.isolated() {
            s.check("vm-isolated", self.vm_isolated()).await;
            s.check("tenant-window", self.window_before_prepare()).await;
        }
        let Some(()) = s.check("prepare", self.prepare()).await else {
            return;
        };
        s.check("client-reaches-database", self.client_reaches_database())
            .await;
        s.check("data-path", self.data_path()).await;
        if self.mode.isolated() {
            s.check("vm-cannot-reach-tenant", self.vm_cannot_reach_tenant())
                .await;
        }
        s.check("heartbeats-healthy", self.heartbeat_healthy())
            .await;
        s.check("resident-memory", self.resident_memory()).await;
        if self.mode == VmMode::DockerIsolated {
            for unit in ["trove-guest-agent.service", "docker-hostnic.service"] {
                s.check(&format!("kill-9-{unit}"), self.kill_hard(unit))
                    .await;
            }
            s.check("reboot", self.reboot()).await;
            s.check("units-verify", self.units_verify()).await;
        }
        s.check("journal", self.journal()).await;
    }

    async fn wait_booted(&self) -> Result<((), String)> {
        let agent = self.qga().clone();
        let answered =
            poll_off_runtime(BOOT_LIMIT, Duration::from_secs(2), move || agent.answers()).await?;
        if !answered {
            bail!(
                "the guest agent did not answer within {} s; console: {}",
                BOOT_LIMIT.as_secs(),
                self.vm.console_tail(25)
            );
        }
        Ok((
            (),
            format!(
                "power-on to guest agent: {:.1} s",
                self.vm.powered_on.elapsed().as_secs_f64()
            ),
        ))
    }

    async fn units_active(&self) -> Result<((), String)> {
        let agent = self.qga().clone();
        let units = self.mode.units();
        let script = format!("systemctl is-active {}", units.join(" "));
        let outcome = tokio::task::spawn_blocking(move || {
            let mut last = String::new();
            let active = poll_until(Duration::from_secs(240), Duration::from_secs(2), || {
                match agent.sh(&script, Duration::from_secs(20)) {
                    Ok(run) => {
                        // `is-active` exits 0 when any one unit is active: read each state.
                        let states: Vec<&str> = run.stdout.split_whitespace().collect();
                        last = states.join(" ");
                        states.len() == units.len() && states.iter().all(|s| *s == "active")
                    }
                    Err(e) => {
                        last = format!("{e:#}");
                        false
                    }
                }
            });
            (active, last)
        })
        .await?;
        match outcome {
            (Some(()), states) => Ok((
                (),
                format!(
                    "{}: {states}, {:.1} s after power-on",
                    units.join(" "),
                    self.vm.powered_on.elapsed().as_secs_f64()
                ),
            )),
            (None, states) => bail!("{}: {states}", units.join(" ")),
        }
    }

    async fn agent_answers(&self) -> Result<((), String)> {
        self.answer_rpc_ping(AGENT_LIMIT).await?;
        Ok((
            (),
            format!(
                "power-on to rpc_ping answered over the management network: {:.1} s",
                self.vm.powered_on.elapsed().as_secs_f64()
            ),
        ))
    }

    /// cloud-init writes the injected files 0644 (Trove gives no permissions); the agent
    /// makes them private before reading the key and the broker password in them.
    async fn injected_files_private(&self) -> Result<((), String)> {
        let out = self.qga().sh_ok(
            "stat -c '%a %U %n' /etc/trove/conf.d/*.conf",
            Duration::from_secs(20),
        )?;
        let open: Vec<&str> = out
            .lines()
            .filter(|line| !line.starts_with("600 root ") && !line.starts_with("400 root "))
            .collect();
        ensure!(open.is_empty(), "readable by others: {open:?}");
        Ok(((), out.trim().replace('\n', "; ")))
    }

    fn unit_log(&self, unit: &str) -> String {
        self.qga()
            .sh(
                &format!("journalctl -b -u {unit} -n 15 --no-pager -o cat"),
                Duration::from_secs(20),
            )
            .map(|run| run.stdout)
            .unwrap_or_else(|e| format!("(unreadable: {e:#})"))
    }

    /// How long a oneshot unit of this boot took from starting to active, from systemd's
    /// monotonic timestamps.
    fn unit_active_after(&self, unit: &str) -> Result<Duration> {
        let shown = self.qga().sh_ok(
            &format!(
                "systemctl show {unit} -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic"
            ),
            Duration::from_secs(20),
        )?;
        let stamp = |key: &str| -> Result<u64> {
            shown
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .and_then(|value| value.trim().parse().ok())
                .with_context(|| format!("no {key} for {unit} in: {shown}"))
        };
        let started = stamp("InactiveExitTimestampMonotonic")?;
        let active = stamp("ActiveEnterTimestampMonotonic")?;
        ensure!(
            active >= started && active > 0,
            "{unit} is not active in this boot: {shown}"
        );
        Ok(Duration::from_micros(active - started))
    }

    /// The tenant NIC, which must be in the VM (before `prepare`).
    fn tenant_nic_state(&self) -> Result<TenantNic> {
        self.in_vm(self.tenant_nic_in_vm()?)
    }

    /// The NIC read, which must be in the VM.
    fn in_vm(&self, nic: Option<TenantNic>) -> Result<TenantNic> {
        nic.ok_or_else(|| {
            anyhow!(
                "no link with the tenant MAC {} in the VM",
                self.network.tenant_mac
            )
        })
    }

    /// Whether the Docker database container's namespace holds a link with the tenant MAC,
    /// looked at from the VM through the container's process.
    fn database_container_holds_tenant_nic(&self) -> Result<bool> {
        let links: Value = serde_json::from_str(&self.qga().sh_ok(
            "nsenter --net=/proc/$(docker inspect -f '{{.State.Pid}}' database)/ns/net ip -j link show",
            Duration::from_secs(30),
        )?)
        .context("`ip -j link show` in the database container's namespace")?;
        let mac = self.network.tenant_mac.to_string();
        Ok(links
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["address"].as_str() == Some(mac.as_str())))
    }

    async fn vm_isolated(&self) -> Result<((), String)> {
        let state = self.in_vm(self.tenant_nic_bare_in_vm()?)?;
        let leases =
            std::fs::read_to_string(VmNetwork::tenant_leases(&self.dir.path)).unwrap_or_default();
        Ok((
            (),
            format!(
                "tenant NIC {} ({}): no address, no route; tenant DHCP leases handed out: {}",
                state.name,
                if state.up { "up" } else { "down" },
                leases.lines().count()
            ),
        ))
    }

    /// The first boot's tenant window, which must never have opened: cloud-init writes
    /// `eth1.json` only after ifupdown's DHCP, but `trove-netiso-first-boot.service` reads it
    /// out of cloud-init's local stage and keeps ifupdown off the tenant NIC, so the VM must
    /// not have answered on the tenant address since power-on, nor asked for it.
    async fn window_before_prepare(&self) -> Result<((), String)> {
        let seen = self.watch.so_far();
        let requests = self.tenant_dhcp_requests();
        let first_boot = self.qga().sh(
            "journalctl -b -o cat -u trove-netiso-first-boot.service 2>&1 | grep -v '^Starting\\|^Finished\\|Deactivated' | tail -n 5",
            Duration::from_secs(30),
        )?;
        let first_boot = first_boot.stdout.trim().replace('\n', " | ");
        let detail = format!(
            "{}; trove-netiso-first-boot: {first_boot}",
            window_detail(&seen, requests)
        );
        ensure!(
            first_boot.contains("wrote /etc/trove/eth1.json"),
            "trove-netiso-first-boot.service did not write eth1.json from the user data: {detail}"
        );
        ensure!(
            seen.answered == 0 && requests == 0,
            "the VM held or asked for the tenant address on its first boot: {detail}"
        );
        Ok(((), detail))
    }

    /// Trove's own window, measured for the comparison: its agent sets the tenant NIC down
    /// when it starts, after cloud-init's DHCP gave the NIC its address, so the VM answers
    /// there until then. Reported, not held to zero; what must hold is that the watcher
    /// knocked all along and that the NIC is down once the agent answers.
    async fn window_trove(&self) -> Result<((), String)> {
        let seen = self.watch.so_far();
        let nic = self.tenant_nic_state()?;
        let detail = format!(
            "{}; the NIC now: {} {}, addresses {:?}",
            window_detail(&seen, self.tenant_dhcp_requests()),
            nic.name,
            if nic.up { "up" } else { "down" },
            nic.addresses
        );
        ensure!(seen.knocks > 0, "no knock was sent: {detail}");
        ensure!(!nic.up, "Trove's agent left the tenant NIC up: {detail}");
        Ok(((), detail))
    }

    /// DHCP requests from the tenant NIC the tenant network's DHCP server has seen.
    fn tenant_dhcp_requests(&self) -> usize {
        let log =
            std::fs::read_to_string(self.dir.path.join("dhcp-vmcli0.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("DHCPDISCOVER(vmcli0)") || l.contains("DHCPREQUEST(vmcli0)"))
            .count()
    }

    async fn prepare(&self) -> Result<((), String)> {
        let cast = self.prepare_until_healthy(PREPARE_LIMIT).await?;
        let healthy = cast.healthy_after;
        let (login, user) = self.first_login()?;
        Ok((
            (),
            format!(
                "prepare cast to healthy {:.1} s, to the first tenant login {:.1} s (as {user})",
                healthy.as_secs_f64(),
                (healthy + login).as_secs_f64()
            ),
        ))
    }

    fn first_login(&self) -> Result<(Duration, String)> {
        self.first_tenant_login(LOGIN_LIMIT)
    }

    async fn client_reaches_database(&self) -> Result<((), String)> {
        let server = self.database_address();
        let rows = self.tenant_sql(
            "CREATE TABLE IF NOT EXISTS vm_probe (id INT PRIMARY KEY, note TEXT); \
             REPLACE INTO vm_probe VALUES (1, 'from the tenant network'); \
             SELECT note FROM vm_probe WHERE id = 1",
        )?;
        ensure!(
            rows == "from the tenant network",
            "the database answered {rows:?}"
        );
        let how = if self.mode.isolated() {
            "the container's own interface"
        } else {
            "the VM's address (DNAT)"
        };
        Ok((
            (),
            format!("client network => database at {server} through {how}: wrote and read a row"),
        ))
    }

    /// The data path over virtio: the tenant client reads 64 MiB of rows from the database,
    /// [`DATA_PATH_RUNS`] times. QEMU's CPU time per GB is what the guest spends on it; the
    /// database's own work is the same in both modes, so isolated against bridged shows what
    /// Docker's NAT and bridge cost inside a real VM.
    async fn data_path(&self) -> Result<((), String)> {
        let server = self.database_address();
        let query = format!("SELECT REPEAT('x', 1023) FROM seq_1_to_{DATA_PATH_ROWS}");
        let expected = DATA_PATH_ROWS * 1024;
        let mut megabytes_per_s = Vec::new();
        let mut cpu_s_per_gb = Vec::new();
        for _ in 0..DATA_PATH_RUNS {
            let cpu_before = self.vm.cpu_time()?;
            let started = Instant::now();
            let bytes =
                self.login
                    .stream(&self.network.client_netns, server, &query, DATA_PATH_LIMIT)?;
            let wall = started.elapsed().as_secs_f64();
            let cpu = self.vm.cpu_time()?.saturating_sub(cpu_before);
            ensure!(
                bytes == expected,
                "the tenant client received {bytes} bytes, not {expected}"
            );
            megabytes_per_s.push(bytes as f64 / 1e6 / wall);
            cpu_s_per_gb.push(cpu.as_secs_f64() / (bytes as f64 / 1e9));
        }
        let runs: Vec<String> = megabytes_per_s
            .iter()
            .zip(&cpu_s_per_gb)
            .map(|(rate, cpu)| format!("{rate:.1} MB/s at {cpu:.1} CPU s/GB"))
            .collect();
        Ok((
            (),
            format!(
                "{} MiB from the database to the tenant client, {DATA_PATH_RUNS} runs: median {:.1} MB/s, {:.1} QEMU CPU s per GB ({})",
                expected >> 20,
                median(&mut megabytes_per_s),
                median(&mut cpu_s_per_gb),
                runs.join("; ")
            ),
        ))
    }

    async fn vm_cannot_reach_tenant(&self) -> Result<((), String)> {
        let script = format!(
            "timeout 5 bash -c 'exec 3<>/dev/tcp/{TENANT_ROUTER}/3306' 2>&1; echo \"exit $?\""
        );
        let out = self.qga().sh_ok(&script, Duration::from_secs(20))?;
        ensure!(
            !out.contains("refused") && !out.contains("exit 0"),
            "the VM reached the tenant router: {}",
            out.trim()
        );
        Ok((
            (),
            format!(
                "connect from the VM to {TENANT_ROUTER}: {}",
                out.trim().replace('\n', "; ")
            ),
        ))
    }

    async fn heartbeat_healthy(&self) -> Result<((), String)> {
        let waited = self
            .fresh_healthy_heartbeat(Duration::from_secs(60))
            .await?;
        Ok((
            (),
            format!(
                "a fresh `healthy` heartbeat at the conductor after {:.1} s",
                waited.as_secs_f64()
            ),
        ))
    }

    /// The agent's and the plugin's resident memory in the guest, as `ps` reads it; for
    /// Trove's agent, every process running its console script (a Python interpreter).
    async fn resident_memory(&self) -> Result<((), String)> {
        let out = self
            .qga()
            .sh_ok("ps -eo rss=,comm=,args=", Duration::from_secs(20))?;
        let mut found = Vec::new();
        for line in out.lines() {
            let mut fields = line.split_whitespace();
            let (Some(rss), Some(name)) = (fields.next(), fields.next()) else {
                continue;
            };
            let args: Vec<&str> = fields.collect();
            // `ps` shows the kernel's command name, cut at 15 characters: "trove-guest-age".
            let ours = matches!(name, "trove-guest-age" | "docker-hostnic");
            let trove = args.contains(&"/usr/local/bin/guest-agent");
            if !(ours || trove) {
                continue;
            }
            let kib: u64 = rss.parse().with_context(|| format!("ps: {line:?}"))?;
            let label = if trove { "Trove's guest-agent" } else { name };
            found.push(format!("{label} {:.1} MiB", kib as f64 / 1024.0));
        }
        let agent = if self.mode == VmMode::TroveReference {
            "Trove's guest-agent"
        } else {
            "trove-guest-age"
        };
        ensure!(
            found.iter().any(|f| f.starts_with(agent)),
            "no {agent} process in the VM: {out:?}"
        );
        Ok(((), format!("resident: {}", found.join(", "))))
    }

    fn database_started_at(&self) -> Result<String> {
        let script = match self.mode.runtime() {
            RuntimeKind::Docker => "docker inspect -f '{{.State.StartedAt}}' database".to_owned(),
            RuntimeKind::Containerd => "ctr -n trove task ls".to_owned(),
        };
        Ok(self
            .qga()
            .sh_ok(&script, Duration::from_secs(30))?
            .trim()
            .to_owned())
    }

    async fn kill_hard(&self, unit: &str) -> Result<((), String)> {
        let unit_name = unit.to_owned();
        let restarts = move |agent: &GuestAgent| -> Result<u64> {
            let out = agent.sh_ok(
                &format!("systemctl show -p NRestarts --value {unit_name}"),
                Duration::from_secs(20),
            )?;
            out.trim()
                .parse()
                .with_context(|| format!("NRestarts of {unit_name}: {out:?}"))
        };
        let before = restarts(self.qga())?;
        let started_at = self.database_started_at()?;
        self.qga().sh_ok(
            &format!("systemctl kill -s KILL {unit}"),
            Duration::from_secs(20),
        )?;
        let killed = Instant::now();
        let agent = self.qga().clone();
        let unit_name = unit.to_owned();
        let back = poll_off_runtime(
            Duration::from_secs(120),
            Duration::from_secs(1),
            move || {
                restarts(&agent).is_ok_and(|n| n > before)
                    && agent
                        .sh(
                            &format!("systemctl is-active {unit_name}"),
                            Duration::from_secs(20),
                        )
                        .is_ok_and(|run| run.succeeded())
            },
        )
        .await?;
        ensure!(back, "systemd did not restart {unit} within 120 s");
        let restarted = killed.elapsed();
        if unit.starts_with("trove-guest-agent") {
            self.controller()?
                .ping_until_answered(Duration::from_secs(180))
                .await?;
        }
        let answered = killed.elapsed();
        let after = self.database_started_at()?;
        ensure!(
            after == started_at,
            "the database container was restarted ({started_at} -> {after})"
        );
        self.first_login()?;
        Ok((
            (),
            format!(
                "systemd restarted {unit} after {:.1} s (answering after {:.1} s); the database untouched, the client logs in",
                restarted.as_secs_f64(),
                answered.as_secs_f64()
            ),
        ))
    }

    async fn reboot(&self) -> Result<((), String)> {
        let controller = self.controller()?;
        // The guest agent dies with the reboot: its answer may never come.
        let _ = self.qga().sh("systemctl reboot", Duration::from_secs(5));
        let rebooted = Instant::now();
        let requests_before = self.tenant_dhcp_requests();
        let agent = self.qga().clone();
        let went = poll_off_runtime(
            Duration::from_secs(120),
            Duration::from_millis(500),
            move || !agent.answers(),
        )
        .await?;
        ensure!(went, "the VM did not go down within 120 s");
        let mark = controller.mark();
        let agent = self.qga().clone();
        let back =
            poll_off_runtime(BOOT_LIMIT, Duration::from_secs(2), move || agent.answers()).await?;
        ensure!(
            back,
            "the VM did not come back within {} s; console: {}",
            BOOT_LIMIT.as_secs(),
            self.vm.console_tail(25)
        );
        let (_, user) = self.first_login().map_err(|e| {
            e.context(format!(
                "agent journal of this boot: {}; systemd jobs still queued: {}",
                self.unit_log("trove-guest-agent"),
                self.qga()
                    .sh("systemctl list-jobs --no-pager", Duration::from_secs(20))
                    .map(|run| run.stdout)
                    .unwrap_or_else(|e| format!("(unreadable: {e:#})"))
            ))
        })?;
        let login_after = rebooted.elapsed();
        let wait_online = self.unit_active_after("ifupdown-wait-online.service")?;
        // The database container came back by its restart policy and the plugin moved the NIC
        // into it again: the VM has no link with the tenant MAC at all.
        if let Some(state) = self.tenant_nic_in_vm()? {
            bail!(
                "after the reboot the tenant NIC {} is in the VM (addresses {:?}, routes {:?}), not in the database container",
                state.name,
                state.addresses,
                state.routes
            );
        }
        ensure!(
            self.database_container_holds_tenant_nic()?,
            "after the reboot the tenant NIC is neither in the VM nor in the database container"
        );
        controller
            .wait_event(mark, Duration::from_secs(120), |e| {
                *e == ConductorEvent::Heartbeat("healthy".into())
            })
            .await
            .context("no `healthy` heartbeat after the reboot")?;
        let requests = self.tenant_dhcp_requests() - requests_before;
        ensure!(
            requests == 0,
            "after the reboot the VM sent {requests} DHCP requests on the tenant network"
        );
        Ok((
            (),
            format!(
                "reboot to the first tenant login {:.1} s (as {user}), no second prepare; ifupdown-wait-online took {:.1} s (not waiting for the excluded tenant NIC); the tenant NIC back in the database container, none in the VM, no DHCP request from the VM on the tenant network; heartbeats `healthy` again",
                login_after.as_secs_f64(),
                wait_online.as_secs_f64()
            ),
        ))
    }

    async fn units_verify(&self) -> Result<((), String)> {
        let run = self.qga().sh(
            "cd /lib/systemd/system && systemd-analyze verify --man=no trove-guest-agent.service trove-netiso-isolate.service trove-netiso-isolate.path trove-netiso-first-boot.service ifupdown-wait-online.service networking.service docker-hostnic.service docker-hostnic.socket 2>&1",
            Duration::from_secs(120),
        )?;
        let complaints: Vec<&str> = run
            .stdout
            .lines()
            .filter(|line| {
                [
                    "trove-guest-agent",
                    "trove-netiso",
                    "docker-hostnic",
                    "ifupdown-wait-online",
                ]
                .iter()
                .any(|ours| line.contains(ours))
            })
            .collect();
        ensure!(
            run.succeeded() && complaints.is_empty(),
            "systemd-analyze verify exited {:?}: {}",
            run.code,
            run.stdout.trim()
        );
        Ok((
            (),
            "systemd-analyze verify: no complaint about our units".to_owned(),
        ))
    }

    async fn journal(&self) -> Result<((), String)> {
        let out = self.qga().sh_ok(
            "journalctl -u trove-guest-agent -u docker-hostnic -o json --no-pager",
            Duration::from_secs(60),
        )?;
        let mut lines = 0usize;
        let mut priorities = std::collections::BTreeMap::<String, usize>::new();
        let mut ours = 0usize;
        let mut misfiled = Vec::new();
        for line in out.lines() {
            let entry: Value = serde_json::from_str(line).context("a journal entry")?;
            lines += 1;
            let priority = entry["PRIORITY"].as_str().unwrap_or("?").to_owned();
            let message = entry["MESSAGE"].as_str().unwrap_or_default();
            // The daemons' own lines (not systemd's about the units) name their level.
            if let Some(expected) = logged_level_priority(message) {
                ours += 1;
                if priority != expected {
                    misfiled.push(format!("priority {priority} for: {message}"));
                }
            }
            *priorities.entry(priority).or_default() += 1;
        }
        ensure!(
            ours > 0 && misfiled.is_empty(),
            "{} of the daemons' {ours} log lines are recorded at the wrong priority (levels not passed to the journal), e.g. {:?}",
            misfiled.len(),
            misfiled.first()
        );
        ensure!(
            lines > 0,
            "the journal holds nothing of the agent or the plugin"
        );
        for secret in &self.secrets {
            ensure!(
                !out.contains(secret.as_str()),
                "a secret (the instance key) is in the journal"
            );
        }
        ensure!(
            !out.contains(self.login.password()),
            "the tenant's password is in the journal"
        );
        Ok((
            (),
            format!(
                "{lines} entries by priority {priorities:?}, each of the daemons' {ours} lines at its level's priority; no secret in them"
            ),
        ))
    }

    async fn finish(mut self, keep_logs: bool) {
        if keep_logs {
            let _ = std::fs::write(
                self.dir.path.join("agent-journal.log"),
                self.unit_log("trove-guest-agent"),
            );
        }
        if let Some(controller) = self.controller.take() {
            controller.stop().await;
        }
    }
}

/// The journal priority a daemon's log line should have been recorded at, from the level
/// its text names (`<timestamp> <LEVEL> <target>: ...`); `None` for lines that are not the
/// daemons' own log events (systemd's messages about the units, a final `error:` line).
impl TroveGuest for VmGuest {
    fn kind(&self) -> GuestKind {
        GuestKind::Vm
    }

    fn control_plane(&self) -> Result<&Controller> {
        self.controller()
    }

    fn tenant_login(&self) -> &TenantLogin {
        &self.login
    }

    fn client_netns(&self) -> &str {
        &self.network.client_netns
    }

    /// The VM's tenant address: the container takes it when isolated, the VM keeps it and
    /// publishes the port when bridged.
    fn database_address(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(VM_TENANT_ADDR), DATABASE_PORT)
    }

    /// The preloaded MariaDB image's tag, Trove's mount point in the VM.
    fn prepare_args(&self) -> Value {
        prepare_args(
            MARIADB_TAG,
            MOUNT_POINT,
            &self.login,
            &mariadb_config(SERVER_ID, MAX_CONNECTIONS),
        )
    }

    /// The agent unit's journal of this boot.
    fn agent_log_tail(&self) -> String {
        self.unit_log(self.mode.agent_unit())
    }

    /// Read with `ip -j` in the VM, through QEMU's guest agent.
    fn tenant_nic_in_vm(&self) -> Result<Option<TenantNic>> {
        let links: Value = serde_json::from_str(
            &self
                .qga()
                .sh_ok("ip -j addr show", Duration::from_secs(20))?,
        )
        .context("`ip -j addr show` in the VM")?;
        let mac = self.network.tenant_mac.to_string();
        let Some(link) = links
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["address"].as_str() == Some(mac.as_str()))
        else {
            return Ok(None);
        };
        let name = link["ifname"].as_str().unwrap_or_default().to_owned();
        let addresses: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["scope"].as_str() == Some("global"))
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
            .collect();
        let routes: Value = serde_json::from_str(
            &self
                .qga()
                .sh_ok("ip -j route show table all", Duration::from_secs(20))?,
        )
        .context("`ip -j route show table all` in the VM")?;
        let routes: Vec<String> = routes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["dev"].as_str() == Some(name.as_str()))
            .filter(|r| r["table"].as_str() != Some("local"))
            .map(|r| r["dst"].as_str().unwrap_or("?").to_owned())
            .collect();
        Ok(Some(TenantNic {
            name,
            up: link["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "UP")),
            addresses,
            routes,
        }))
    }
}

/// What the tenant-side watcher saw since power-on, and the tenant DHCP requests, in words.
fn window_detail(seen: &window::Window, requests: usize) -> String {
    format!(
        "{} knocks on {VM_TENANT_ADDR} from power-on, {} answered{}; tenant DHCP requests: {requests}",
        seen.knocks,
        seen.answered,
        match seen.first {
            Some(first) => format!(
                " (first at {:.2} s, answering for {} ms)",
                first.as_secs_f64(),
                seen.span.as_millis()
            ),
            None => String::new(),
        },
    )
}

/// The middle value (the upper middle one of an even count); NaN for none.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn logged_level_priority(message: &str) -> Option<&'static str> {
    let mut words = message.split_whitespace();
    let timestamp = words.next()?;
    if !timestamp.ends_with('Z') || !timestamp.contains('T') {
        return None;
    }
    match words.next()? {
        "ERROR" => Some("3"),
        "WARN" => Some("4"),
        "INFO" => Some("6"),
        "DEBUG" | "TRACE" => Some("7"),
        _ => None,
    }
}

/// The files Trove's taskmanager injects for this guest, at Trove's paths.
fn injected_files(
    mode: VmMode,
    guest_id: &str,
    key: &str,
    exchange: &str,
    conductor_queue: &str,
    tenant_mac: netiso_netlink::MacAddress,
) -> Result<Vec<InjectedFile>> {
    let isolated = mode.isolated();
    let guest_info = GuestInfo {
        guest_id: guest_id.to_owned(),
        datastore_manager: DATASTORE.to_owned(),
        datastore_version: MARIADB_TAG.to_owned(),
        tenant_id: "netiso-harness".to_owned(),
        manager_class: "trove.guestagent.datastore.mariadb.manager.Manager".to_owned(),
        replication_strategy:
            "trove.guestagent.strategies.replication.mariadb_gtid.MariaDBGTIDReplication".to_owned(),
        ssl_mode: None,
        instance_rpc_encr_key: Some(Secret::new(key.to_owned())),
    };
    let registry = format!("{MGMT_GATEWAY}:5000");
    let mut files = vec![
        InjectedFile {
            path: "/etc/trove/conf.d/guest_info.conf".into(),
            content: guest_info.render(isolated),
        },
        InjectedFile {
            path: "/etc/trove/conf.d/trove-guestagent.conf".into(),
            content: format!(
                "[DEFAULT]\n\
                 transport_url = rabbit://guest:guest@{MGMT_GATEWAY}:5672/\n\
                 control_exchange = {exchange}\n\
                 conductor_queue = {conductor_queue}\n\
                 report_interval = 10\n\
                 state_change_wait_time = 600\n\
                 \n\
                 [guest_agent]\n\
                 container_registry = {registry}\n\
                 \n\
                 [{DATASTORE}]\n\
                 docker_image = {MARIADB_REPOSITORY}\n\
                 tcp_ports = {DATABASE_PORT}\n\
                 mount_point = {MOUNT_POINT}\n\
                 \n\
                 [netiso]\n\
                 runtime = {runtime}\n",
                runtime = mode.runtime().as_str(),
            ),
        },
    ];
    if isolated {
        files.push(InjectedFile {
            path: "/etc/trove/eth1.json".into(),
            content: tenant_port(tenant_mac)?.render_eth1_json(),
        });
    }
    let mut control = ControlPlaneConfig::default();
    control.network_isolation = isolated;
    control.docker_insecure_registries = vec![registry];
    if let Some(daemon_json) = render_daemon_json(&control, isolated) {
        files.push(InjectedFile {
            path: "/etc/docker/daemon.json".into(),
            content: daemon_json,
        });
    }
    Ok(files)
}

/// The tenant port as Neutron describes it to the taskmanager.
fn tenant_port(mac: netiso_netlink::MacAddress) -> Result<UserPort> {
    Ok(UserPort {
        mac_address: mac,
        fixed_ips: vec![FixedIp {
            ip_address: IpAddr::V4(VM_TENANT_ADDR),
            cidr: net::TENANT_CIDR.parse()?,
            gateway_ip: Some(IpAddr::V4(TENANT_ROUTER)),
            host_routes: Vec::new(),
            ipv6_ra_mode: None,
        }],
    })
}

/// [`poll_until`] on a blocking thread (the probes talk to the QEMU guest agent synchronously):
/// whether `probe` held before `limit`.
async fn poll_off_runtime(
    limit: Duration,
    period: Duration,
    mut probe: impl FnMut() -> bool + Send + 'static,
) -> Result<bool> {
    let held = tokio::task::spawn_blocking(move || poll_until(limit, period, &mut probe)).await?;
    Ok(held.is_some())
}

/// Calls `probe` every `period` until it is true or `limit` passes.
fn poll_until(limit: Duration, period: Duration, mut probe: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return Some(());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(period);
    }
}

#[cfg(test)]
mod tests {
    use super::{logged_level_priority, median};

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0]), 4.0);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn a_daemons_line_names_its_priority_and_systemds_lines_do_not() {
        assert_eq!(
            logged_level_priority("2026-12-06T05:26:31.156304Z  WARN trove_guest_agent: x"),
            Some("4")
        );
        assert_eq!(
            logged_level_priority("2026-12-06T05:26:31.156304Z  INFO netiso_guest::agent: y"),
            Some("6")
        );
        assert_eq!(
            logged_level_priority("Started trove-guest-agent.service - Trove guest agent"),
            None
        );
        assert_eq!(
            logged_level_priority("error: cannot load the configuration"),
            None
        );
    }
}
