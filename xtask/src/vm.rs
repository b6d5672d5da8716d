//! `cargo xtask vm`: the project booted as a real Trove guest. Provisions the control plane,
//! builds the Debian packages and the guest image (cached), then runs the harness's VM
//! scenarios: QEMU boots the image with a management and a tenant network in namespaces of
//! the harness's own, cloud-init writes the files as Trove's taskmanager injects them, and the
//! harness checks isolation, the database from the tenant network, the tenant window, kill -9,
//! a reboot, bridged mode and containerd. Fails when any check fails.

use crate::guest_image::Variant;
use crate::sh::{self, say};
use crate::{demo, guest_image, package, provision};
use anyhow::Result;

/// The scenario that boots Trove's own agent (in the image variant built only for it).
const REFERENCE: &str = "vm-trove-reference";

/// Provision, package, build the image, run the VM scenarios (`scenarios`: a comma-separated
/// subset, or all).
pub fn run(scenarios: Option<&str>) -> Result<()> {
    provision::run_without_ci_tools()?;
    run_provisioned(scenarios)
}

/// The same, on a machine `cargo xtask provision` has just set up (`cargo xtask ci`).
pub fn run_provisioned(scenarios: Option<&str>) -> Result<()> {
    let debs = package::build()?;
    let image = guest_image::ensure(&debs, Variant::Netiso)?;
    let reference = if scenarios.is_some_and(|named| named.split(',').any(|n| n == REFERENCE)) {
        Some(guest_image::path_str(&guest_image::ensure(
            &debs,
            Variant::TroveReference,
        )?)?)
    } else {
        None
    };
    say("== vm: a real guest VM under QEMU, driven as Trove's control plane drives it");
    // The same build as the harness step's (`cargo xtask ci` has it already): one feature
    // resolution, nothing compiled twice.
    let harness = demo::build_harness()?;
    let image = guest_image::path_str(&image)?;
    let mut args = vec!["--vm-image", image.as_str()];
    if let Some(reference) = &reference {
        args.extend(["--vm-reference-image", reference.as_str()]);
    }
    if let Some(scenarios) = scenarios {
        args.extend(["--scenarios", scenarios]);
    }
    sh::run(&harness, &args)
}
