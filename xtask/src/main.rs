//! Task runner for trove-netiso (`cargo xtask <task>`).
//!
//! Everything the tests need is installed and started by this program, so a fresh Debian
//! machine and a CI run reach the same state with one command.

mod advisories;
mod bench;
mod ci;
mod demo;
mod guest_image;
mod layout;
mod package;
mod provision;
mod sh;
mod soak;
mod vm;

use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Parser)]
#[command(name = "xtask", about = "trove-netiso task runner")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The tasks, one per workflow.
#[derive(Subcommand)]
enum Task {
    /// Install missing packages and tools, build the simulated guest topology and start
    /// RabbitMQ, the registry, dockerd and containerd. Idempotent.
    Provision {
        /// Also start the three-node RabbitMQ cluster (ports 5681-5683) the cluster tests
        /// use; `cargo xtask ci` always does.
        #[arg(long)]
        rabbit_cluster: bool,
    },
    /// Provision, then fmt, clippy, cargo-deny, the whole test suite as root and the fuzz
    /// smoke runs: what `.ci/run` runs.
    Ci,
    /// Provision, then measure every performance claim against its reference (Trove's Python
    /// plugin and oslo.messaging, `ip` commands, Docker's NAT) and rewrite `docs/benchmarks.md`.
    Bench {
        /// Run only these parts (plugin, container, datapath, rpc, isolation, micro, prepare,
        /// fleet) and print the report instead of rewriting `docs/benchmarks.md`.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The same as `--only`: `cargo xtask bench fleet` runs the fleet part alone.
        parts: Vec<String>,
        /// Fleet part: the numbers of guests, in order.
        #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 500, 1000])]
        sizes: Vec<usize>,
        /// Fleet part: at most this many Python stand-ins (about 60 MiB each).
        #[arg(long, default_value_t = 100)]
        python_cap: usize,
        /// Fleet part: the agents' heartbeat interval in seconds (Trove: 60).
        #[arg(long, default_value_t = 60)]
        heartbeat_interval: u64,
        /// Fleet part: seconds of idling over which CPU and heartbeats are read.
        #[arg(long, default_value_t = 65)]
        idle_seconds: u64,
        /// Fleet part: calls in flight during a sweep.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Fleet part: sizes not started within this many minutes are skipped.
        #[arg(long, default_value_t = 15)]
        budget_minutes: u64,
    },
    /// Build the Debian packages of trove-guest-agent and docker-hostnic with cargo-deb
    /// (release builds, man pages, completions, systemd units) under target/debian/, and
    /// print their paths, one per line, last.
    Package,
    /// Print the environment variables that tell tests where the provisioned services are.
    Env,
    /// Check Cargo.lock against the RustSec advisory snapshot beside the checkout (offline);
    /// part of `ci`.
    Advisories,
    /// Provision, then run the harness on a simulated guest in both network modes (Docker, and
    /// isolated with containerd), a SQL round trip from the tenant network in each, and show
    /// every check and the two traffic flows as observed.
    Demo {
        /// Run every harness scenario (the faults too), not only the three modes.
        #[arg(long)]
        all: bool,
    },
    /// Build (or find in the cache) the bootable Debian 12 guest image: diskimage-builder with
    /// the project's element and the Debian packages; prints the image's folder.
    GuestImage {
        /// Take the packages from this folder (one `trove-guest-agent_*.deb`, one
        /// `docker-hostnic_*.deb`) instead of building them.
        #[arg(long, value_name = "DIR")]
        debs: Option<std::path::PathBuf>,
        /// Build the variant with Trove's own guest agent in place of ours (the test element
        /// `trove-reference-agent`), the one `vm-trove-reference` boots.
        #[arg(long)]
        trove_reference: bool,
    },
    /// Provision (the RabbitMQ cluster included), build, then run the chaos soak on the
    /// simulated guest: a seeded schedule of faults, the invariants checked after every step;
    /// fails on any violation, naming the seed to replay (docs/reliability.md).
    Soak {
        /// Minutes to spend, split between the segments; each segment runs every fault kind
        /// once whatever the time (0: exactly that).
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// The schedule's seed (default: drawn at random and printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Only these segments (comma-separated: docker-isolated, containerd-isolated,
        /// docker-bridged).
        #[arg(long)]
        segments: Option<String>,
    },
    /// Provision, build the packages and the guest image (cached), then boot the project as a
    /// real Trove guest VM under QEMU and run the harness's VM scenarios (docs/vm.md).
    Vm {
        /// Run only these VM scenarios (comma-separated: vm-docker-isolated,
        /// vm-docker-bridged, vm-containerd-isolated, and vm-trove-reference, which boots
        /// Trove's own agent in a variant of the image and runs only when named).
        #[arg(long)]
        scenarios: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    sh::start_clock();
    let cli = Cli::parse();
    // `cargo xtask` may be called from any folder of the workspace; tasks use root-relative paths.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("xtask has no parent folder"))?;
    std::env::set_current_dir(root)?;
    match cli.task {
        Task::Provision { rabbit_cluster } => provision::run(rabbit_cluster),
        Task::Ci => ci::run(),
        Task::Bench {
            mut only,
            parts,
            sizes,
            python_cap,
            heartbeat_interval,
            idle_seconds,
            concurrency,
            budget_minutes,
        } => {
            only.extend(parts);
            let fleet = bench::FleetOptions {
                sizes,
                python_cap,
                heartbeat_interval,
                idle_seconds,
                concurrency: concurrency.max(1),
                budget: std::time::Duration::from_secs(budget_minutes * 60),
            };
            bench::run(&only, &fleet)
        }
        Task::Demo { all } => demo::run(all),
        Task::Advisories => advisories::check(),
        Task::Package => package::run_task(),
        Task::GuestImage {
            debs,
            trove_reference,
        } => {
            let debs = match debs {
                Some(dir) => guest_image::debs_in(&dir)?,
                None => package::build()?,
            };
            let variant = if trove_reference {
                guest_image::Variant::TroveReference
            } else {
                guest_image::Variant::Netiso
            };
            let image = guest_image::ensure(&debs, variant)?;
            sh::say(&image.display().to_string());
            Ok(())
        }
        Task::Vm { scenarios } => vm::run(scenarios.as_deref()),
        Task::Soak {
            minutes,
            seed,
            segments,
        } => soak::run(minutes, seed, segments.as_deref()),
        Task::Env => {
            // Quoted for `eval`: the TLS URLs hold `?` and `&`.
            for (name, value) in layout::test_environment() {
                sh::say(&format!("export {name}='{value}'"));
            }
            Ok(())
        }
    }
}
