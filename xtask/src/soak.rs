//! `cargo xtask soak`: provision (the RabbitMQ cluster included), build, then run the
//! harness's chaos soak (`netiso-harness --soak-minutes`): a seeded schedule of faults on the
//! simulated guest with the invariants checked after every step (docs/reliability.md).
//! `cargo xtask ci` runs the short form, [`run_short`].

use anyhow::Result;

use crate::demo::build_harness;
use crate::provision;
use crate::sh::{self, say};

/// The seed of CI's short soak: fixed, so that a failure there replays the same schedule by
/// hand (`cargo xtask soak --minutes 0 --seed 20261206`).
const CI_SEED: u64 = 20_261_206;

/// Provision, build, soak for `minutes` (every fault kind at least once whatever the time)
/// with `seed` (drawn and printed by the harness when `None`), on `segments` (all when `None`).
pub fn run(minutes: f64, seed: Option<u64>, segments: Option<&str>) -> Result<()> {
    provision::run(true)?;
    soak(minutes, seed, segments)
}

/// CI's soak on a provisioned machine: every segment, each fault kind of each segment once
/// (no extra random steps), with [`CI_SEED`]; about a quarter of an hour.
pub fn run_short() -> Result<()> {
    soak(0.0, Some(CI_SEED), None)
}

fn soak(minutes: f64, seed: Option<u64>, segments: Option<&str>) -> Result<()> {
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
