//! `cargo xtask soak`: provision (the RabbitMQ cluster included), build, then run the
//! harness's chaos soak (`netiso-harness --soak-minutes`): a seeded schedule of faults on the
//! simulated guest with the invariants checked after every step (docs/reliability.md).

use anyhow::Result;

use crate::demo::build_harness;
use crate::provision;
use crate::sh::{self, say};

/// Provision, build, soak for `minutes` (every fault kind at least once whatever the time)
/// with `seed` (drawn and printed by the harness when `None`), on `segments` (all when `None`).
pub fn run(minutes: f64, seed: Option<u64>, segments: Option<&str>) -> Result<()> {
    provision::run(true)?;
    let harness = build_harness()?;
    let minutes = minutes.to_string();
    let seed = seed.map(|s| s.to_string());
    let mut args = vec!["--soak-minutes", minutes.as_str()];
    if let Some(seed) = &seed {
        args.extend(["--seed", seed.as_str()]);
    }
    if let Some(segments) = segments {
        args.extend(["--soak-segments", segments]);
    }
    say("== soak: faults on the simulated guest, invariants after every step");
    sh::run(&harness, &args)
}
