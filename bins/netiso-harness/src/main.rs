//! `netiso-harness`: the command line of `netiso-testbed`. Runs the scenarios on simulated
//! Trove guests (network namespaces and veth pairs) or on guest VMs (`--vm-image`), driving
//! the guest agent through real RPC as Trove's control plane would, or runs the chaos soak
//! (`--soak-minutes`). Prints one line per check, the traffic flows as observed and
//! `N passed, M failed`; exits non-zero on any failure. See docs/harness.md.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

use netiso_testbed::report::Report;
use netiso_testbed::settings::Settings;
use netiso_testbed::soak::{self, Segment, SoakOptions};
use netiso_testbed::{processes, scenarios};

use crate::cli::Args;

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETISO_HARNESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "netiso-harness needs root (network namespaces, the guest's dockerd): run it as root after `cargo xtask provision`"
    );
    let settings = args.settings();
    let scenarios = args.scenarios();
    // The simulated guest shares the provisioned dockerd and namespaces: one run at a time.
    // A VM run has namespaces, taps and DHCP servers of its own and only reads the
    // provisioned broker and registry, so it takes a lock of its own (one VM at a time: two
    // software-emulated guests would starve each other of CPU).
    let lock_name = if args.vm_image.is_some() || args.vm_reference_image.is_some() {
        "vm.lock"
    } else {
        "lock"
    };
    let _one_run_at_a_time = processes::RunLock::acquire(&args.work_dir.join(lock_name))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(minutes) = args.soak_minutes {
        return soak(&runtime, &settings, &args, minutes);
    }
    let mut report = Report::default();
    let interrupted = runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        // Dropping the scenarios future on a signal runs every guard: nothing is left behind.
        let interrupted = tokio::select! {
            () = scenarios::run_all(&settings, &scenarios, &mut report) => None,
            _ = tokio::signal::ctrl_c() => Some("SIGINT"),
            _ = terminate.recv() => Some("SIGTERM"),
        };
        anyhow::Ok(interrupted)
    })?;
    let _ = std::fs::remove_dir(&settings.work_dir);
    if let Some(signal) = interrupted {
        eprintln!("interrupted by {signal}: everything created was removed");
    }
    print!("{}", report.render());
    if interrupted.is_some() {
        return Ok(ExitCode::from(130));
    }
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the soak; exits non-zero on any violation (the report names the seed to replay).
#[allow(clippy::print_stdout)]
fn soak(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &Args,
    minutes: f64,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        minutes.is_finite() && minutes >= 0.0,
        "--soak-minutes must be a non-negative number of minutes, not {minutes}"
    );
    let seed = match args.seed {
        Some(seed) => seed,
        None => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("drawing a seed: {e}"))?;
            u64::from_le_bytes(bytes)
        }
    };
    let options = SoakOptions {
        duration: std::time::Duration::from_secs_f64(minutes * 60.0),
        seed,
        segments: if args.soak_segments.is_empty() {
            Segment::ALL.to_vec()
        } else {
            args.soak_segments.clone()
        },
    };
    println!(
        "soak: seed {seed}, {minutes} minutes, segments {:?}",
        options.segments
    );
    let failed = runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let failed = tokio::select! {
            failed = soak::run_and_report(settings, &options) => Some(failed),
            _ = tokio::signal::ctrl_c() => None,
            _ = terminate.recv() => None,
        };
        anyhow::Ok(failed)
    })?;
    let _ = std::fs::remove_dir(&settings.work_dir);
    Ok(match failed {
        None => {
            eprintln!("soak interrupted (seed {seed}): everything created was removed");
            ExitCode::from(130)
        }
        Some(0) => ExitCode::SUCCESS,
        Some(_) => ExitCode::FAILURE,
    })
}
