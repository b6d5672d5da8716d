//! `trove-guest-agent`: the Trove guest agent of trove-netiso. Takes the tenant NIC away from
//! the VM (fail closed), checks that the control plane is reached through the management
//! network, serves Trove's guest RPC and heartbeats the conductor. All behaviour lives in
//! `netiso-guest`; this binary parses flags, sets up logs and signals, and prints.
//!
//! Flags are oslo's: `trove-guest-agent --config-dir=/etc/trove/conf.d` (no subcommand)
//! runs the agent, as Trove's `guest-agent` does.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use netiso_config::{ConfigError, TenantNicError};
use netiso_daemon::cli::agent::{Cli, Command, IsolateArgs, NetnsCommand, RunArgs};
use netiso_daemon::{exit_code, logging};
use netiso_guest::agent::{self, AgentConfig, AgentError, AgentOptions, RetryPolicy};
use netiso_guest::isolation::{self, IsolationError, WhenAbsent};
use netiso_guest::netns_report::{self, NamespaceReport};
use netiso_netlink::{NetlinkHandle, Rtnetlink as _, netns::CONTAINERD_ADAPTER_NETNS_DIR};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The documented exit status (`exit_code`) for the kind of failure `error` is.
fn exit_status(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<ConfigError>() || cause.is::<TenantNicError>() {
            return exit_code::CONFIG;
        }
        if cause.is::<IsolationError>() || cause.is::<netiso_netlink::NetlinkError>() {
            return exit_code::ISOLATION;
        }
        if let Some(agent_error) = cause.downcast_ref::<AgentError>() {
            return match agent_error {
                AgentError::Config(_)
                | AgentError::TenantNic(_)
                | AgentError::Messaging(_)
                | AgentError::InstanceKey(_) => exit_code::CONFIG,
                AgentError::Runtime(_) => exit_code::UNAVAILABLE,
                AgentError::Netlink(_) => exit_code::ISOLATION,
                _ => exit_code::FAILURE,
            };
        }
    }
    exit_code::FAILURE
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let sources = agent::config_sources(cli.config_file, cli.config_dir);
    // One thread, as Trove's eventlet agent: the agent waits on the broker, dockerd and the
    // kernel, and its blocking work (netlink, probes, statvfs) already runs on blocking
    // threads. Measured by rpc_bench: a fifth less CPU per RPC than on the multi-threaded
    // runtime (no wake-ups between workers), and less memory.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let load = || {
        AgentConfig::load(&sources).with_context(|| {
            format!(
                "cannot load the configuration ({})",
                sources
                    .config_files
                    .iter()
                    .chain(&sources.config_dirs)
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    match cli
        .command
        .unwrap_or_else(|| Command::Run(RunArgs::default()))
    {
        Command::Run(args) => {
            restrict_injected_files(&sources);
            let config = match load() {
                Ok(config) => config,
                Err(e) => {
                    // Fail closed before exiting: systemd will not restart on EX_CONFIG.
                    isolate_fail_closed(&sources);
                    return Err(e);
                }
            };
            let mut options = AgentOptions::default();
            options.preflight_timeout = Duration::from_secs(args.preflight_timeout);
            options.shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
            options.heartbeat_interval = Duration::from_secs(args.heartbeat_interval.max(1));
            options.isolation_retry = RetryPolicy::new(
                Duration::from_millis(args.isolation_retry_initial_ms),
                Duration::from_secs(args.isolation_retry_max_s),
                args.isolation_attempts,
            );
            runtime.block_on(async {
                let signal = termination_signal().context("cannot install signal handlers")?;
                agent::run(config, options, async move {
                    let name = signal.await;
                    tracing::info!(signal = name, "shutdown requested");
                })
                .await
                .context("the guest agent failed")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Isolate(args) if args.boot => isolate_at_boot(&sources),
        Command::Isolate(args) => isolate(&load()?, &args),
        Command::Preflight { timeout } => {
            let config = load()?;
            let tenant_mac = config.tenant()?.map(|(_, target)| target.mac);
            let rtnl = NetlinkHandle::current()?;
            let report = runtime.block_on(agent::run_preflight(
                &config,
                &rtnl,
                tenant_mac,
                Duration::from_secs(timeout),
            ));
            print(&report.to_string())?;
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Netns(command) => runtime.block_on(netns(load, command)),
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Isolates what the tenant NIC file names, whatever the rest of the configuration says; logs
/// the outcome (the agent is about to exit on its configuration error).
fn isolate_fail_closed(sources: &netiso_config::ConfigSources) {
    let outcome = NetlinkHandle::current()
        .map_err(anyhow::Error::from)
        .and_then(|rtnl| Ok(agent::isolate_without_configuration(&rtnl, sources)?));
    match outcome {
        Ok(done) => tracing::warn!("unusable configuration, failing closed: {done}"),
        Err(e) => tracing::error!("unusable configuration, and failing closed failed: {e:#}"),
    }
}

/// cloud-init writes Trove's injected files world-readable (the taskmanager gives no
/// permissions), and they hold the instance key and the broker's password: owner only.
fn restrict_injected_files(sources: &netiso_config::ConfigSources) {
    // An unreadable source is reported by the configuration load that follows.
    let Ok(files) = sources.files_in_load_order() else {
        return;
    };
    match netiso_guest::injected::restrict_to_owner(&files) {
        Ok(changed) => {
            for (path, old_mode) in changed {
                tracing::warn!(
                    file = %path.display(),
                    old_mode = format!("{old_mode:o}"),
                    "configuration file was readable by others; now by its owner only"
                );
            }
        }
        Err(e) => tracing::error!("{e}"),
    }
}

fn isolate_at_boot(sources: &netiso_config::ConfigSources) -> anyhow::Result<ExitCode> {
    let rtnl = NetlinkHandle::current()?;
    let done = agent::isolate_without_configuration(&rtnl, sources)?;
    print(&format!("{done}\n"))?;
    // ifupdown would bring the isolated NIC up again by DHCP right after this unit: keep it
    // off the NIC (the name is only known now, from the MAC).
    if let agent::FailClosed::Isolated { file, .. } = &done {
        let mac = netiso_config::TenantNic::mac_of_refused_file(file)
            .with_context(|| format!("{} lost its MAC while isolating", file.display()))?;
        if let Ok(link) = rtnl.link_by_mac(mac) {
            isolation::ifupdown::exclude_tenant_nic(
                std::path::Path::new(isolation::ifupdown::NETWORKING_ENV),
                std::path::Path::new(isolation::ifupdown::NETWORKING_DEFAULTS),
                &link.name,
            )?;
            print(&format!(
                "ifupdown keeps off {} ({})\n",
                link.name,
                isolation::ifupdown::NETWORKING_ENV
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn isolate(config: &AgentConfig, args: &IsolateArgs) -> anyhow::Result<ExitCode> {
    let mode = config.guest.isolation_mode();
    let Some((_, target)) = config.tenant()? else {
        print(&format!("nothing to isolate: {mode}\n"))?;
        return Ok(if args.verify {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    };
    if !mode.is_isolated() {
        print(&format!("note: the agent would not isolate: {mode}\n"))?;
    }
    let rtnl = NetlinkHandle::current()?;
    if args.dry_run {
        let plan = isolation::plan(&rtnl, &target, WhenAbsent::Isolated)?;
        print(&plan.to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    let state_dir = &config.guest.netiso.state_dir;
    if args.apply {
        let report = isolation::isolate(&rtnl, &target, WhenAbsent::Error)?;
        print(&report.to_string())?;
        let recorded = isolation::baseline::record(state_dir, &target, &report.baseline)?;
        print(&format!("baseline recorded in {}\n", recorded.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    // Against the baseline recorded when the tenant NIC was isolated: the state found now
    // would make the management checks pass whatever changed.
    let report = isolation::baseline::verify_recorded(&rtnl, &target, state_dir)?;
    print(&report.to_string())?;
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn netns(
    load: impl FnOnce() -> anyhow::Result<AgentConfig>,
    command: NetnsCommand,
) -> anyhow::Result<ExitCode> {
    // A debugging tool must work on a half-configured guest: without a usable configuration
    // it still lists Docker's default sandboxes, only without the tenant NIC marker.
    let config = match load() {
        Ok(config) => Some(config),
        Err(e) => {
            tracing::warn!("{e:#}; listing without the tenant NIC and runtime");
            None
        }
    };
    let tenant_mac = config
        .as_ref()
        .and_then(|c| c.tenant().ok().flatten())
        .map(|(_, target)| target.mac);
    let exec_root = config.as_ref().map_or_else(
        || PathBuf::from(netiso_netlink::netns::DOCKER_DEFAULT_EXEC_ROOT),
        |c| c.guest.netiso.docker_exec_root.clone(),
    );
    let containers = match &config {
        Some(config) => match agent::connect_runtime(config).await {
            Ok(runtime) => netns_report::container_sandboxes(&*runtime)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot list containers");
                    Vec::new()
                }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the container runtime");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let dirs = [
        exec_root.join("netns"),
        PathBuf::from(CONTAINERD_ADAPTER_NETNS_DIR),
    ];
    let reports = tokio::task::spawn_blocking({
        let containers = containers.clone();
        move || netns_report::list(&dirs, &containers, tenant_mac)
    })
    .await
    .context("namespace reader failed")?;
    let vm = tokio::task::spawn_blocking(move || {
        let rtnl = NetlinkHandle::current();
        rtnl.map(|rtnl| {
            netns_report::read_namespace(&rtnl, "vm", "/proc/self/ns/net".as_ref(), tenant_mac)
        })
    })
    .await
    .context("namespace reader failed")??;
    match command {
        NetnsCommand::List => {
            let mut text = format!("{:<14} {:<24} interfaces\n", "SANDBOX", "CONTAINERS");
            text.push_str(&netns_report::summary_line(&vm));
            text.push('\n');
            for report in &reports {
                text.push_str(&netns_report::summary_line(report));
                text.push('\n');
            }
            text.push_str(&tenant_summary(tenant_mac, &vm, &reports));
            print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        NetnsCommand::Show { target } => {
            if target == "vm" {
                print(&vm.to_string())?;
                return Ok(ExitCode::SUCCESS);
            }
            match netns_report::find(&reports, &target) {
                Some(report) => {
                    print(&report.to_string())?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    let known: Vec<String> = reports
                        .iter()
                        .map(|r| {
                            if r.containers.is_empty() {
                                r.id.clone()
                            } else {
                                format!("{} ({})", r.id, r.containers.join(","))
                            }
                        })
                        .collect();
                    anyhow::bail!(
                        "no sandbox or container matches {target:?}; known: vm{}{}",
                        if known.is_empty() { "" } else { ", " },
                        known.join(", ")
                    )
                }
            }
        }
    }
}

fn tenant_summary(
    tenant_mac: Option<netiso_netlink::MacAddress>,
    vm: &NamespaceReport,
    reports: &[NamespaceReport],
) -> String {
    let Some(mac) = tenant_mac else {
        return "tenant NIC: unknown (no tenant NIC file)\n".to_owned();
    };
    let holders: Vec<&str> = std::iter::once(vm)
        .chain(reports)
        .filter(|r| r.holds_tenant_nic())
        .map(|r| r.id.as_str())
        .collect();
    match holders.as_slice() {
        [] => format!("tenant NIC {mac}: not found in the VM or any sandbox\n"),
        ["vm"] => format!("tenant NIC {mac}: in the VM namespace (not handed to a container)\n"),
        [one] => format!("tenant NIC {mac}: in sandbox {one}\n"),
        many => format!(
            "tenant NIC {mac}: in several namespaces: {}\n",
            many.join(", ")
        ),
    }
}

/// Resolves with the signal's name on the first SIGTERM or SIGINT.
fn termination_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_default_attempts_are_the_retry_policys() {
        assert_eq!(
            netiso_daemon::cli::agent::DEFAULT_ISOLATION_ATTEMPTS,
            RetryPolicy::default().max_attempts
        );
    }

    #[test]
    fn oslo_flags_without_a_subcommand_mean_run() {
        let cli = Cli::try_parse_from(["trove-guest-agent", "--config-dir=/etc/trove/conf.d"])
            .expect("parses");
        assert_eq!(cli.config_dir, vec![PathBuf::from("/etc/trove/conf.d")]);
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from([
            "trove-guest-agent",
            "isolate",
            "--dry-run",
            "--config-file",
            "/a.conf",
            "--config-file",
            "/b.conf",
        ])
        .expect("parses");
        assert_eq!(cli.config_file.len(), 2);
        assert!(matches!(
            cli.command,
            Some(Command::Isolate(IsolateArgs { dry_run: true, .. }))
        ));
    }

    #[test]
    fn isolate_needs_exactly_one_mode() {
        assert!(Cli::try_parse_from(["trove-guest-agent", "isolate"]).is_err());
        assert!(
            Cli::try_parse_from(["trove-guest-agent", "isolate", "--apply", "--verify"]).is_err()
        );
    }

    #[test]
    fn tenant_summary_names_the_holder() {
        let vm = NamespaceReport {
            id: "vm".into(),
            path: PathBuf::from("/proc/self/ns/net"),
            containers: vec![],
            interfaces: vec![],
            routes: vec![],
            error: None,
        };
        let text = tenant_summary(None, &vm, &[]);
        assert_eq!(text, "tenant NIC: unknown (no tenant NIC file)\n");
        let mac = netiso_netlink::MacAddress::new([0xfa, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(
            tenant_summary(Some(mac), &vm, &[]),
            "tenant NIC fa:16:3e:00:00:01: not found in the VM or any sandbox\n"
        );
    }
}
