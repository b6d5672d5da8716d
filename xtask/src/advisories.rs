//! `cargo deny check advisories` against the RustSec snapshot kept beside the checkout.
//!
//! Machines here cannot reach GitHub, so cargo-deny cannot fetch its advisory database. The
//! project's shared material holds a snapshot of it (`../shared/advisory-db`, a plain folder).
//! cargo-deny only reads a database that is a git checkout at
//! `<db-path>/advisory-db-<hash of the default URL>`, so the snapshot is copied there and
//! committed once; `deny.toml` points `db-path` at [`DB_PARENT`]. The crate graph comes from a
//! `cargo metadata` run made beforehand, because `cargo deny --offline` would otherwise ask
//! cargo for a metadata run that may not download the crates of other platforms.

use crate::sh::{output, run, say};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Where the snapshot lives, relative to the workspace root (CI has it there too).
const SNAPSHOT: &str = "../shared/advisory-db";
/// `db-path` in `deny.toml`.
const DB_PARENT: &str = "target/advisory-dbs";
/// The folder name cargo-deny 0.20 derives from the default database URL
/// (`https://github.com/RustSec/advisory-db`); cargo-deny names it in its error when it differs.
const DB_FOLDER: &str = "advisory-db-3157b0e258782691";
/// The crate graph handed to cargo-deny.
const METADATA: &str = "target/deny-metadata.json";
/// A snapshot with fewer advisories than this is truncated or the wrong folder: checking
/// against it would pass without meaning anything.
const MIN_ADVISORIES: usize = 500;
/// Records which snapshot the prepared checkout was made from.
const STAMP: &str = ".netiso-snapshot";

/// Prepares the database from the snapshot and fails on any advisory that `deny.toml` does not
/// accept (vulnerabilities, unsound or unmaintained crates).
pub fn check() -> Result<()> {
    let snapshot = Path::new(SNAPSHOT);
    if !snapshot.join("crates").is_dir() {
        bail!(
            "the RustSec advisory snapshot is missing at {} (expected beside the checkout, as in CI)",
            snapshot.display()
        );
    }
    let advisories = count_advisories(&snapshot.join("crates"))?;
    if advisories < MIN_ADVISORIES {
        bail!(
            "{} holds only {advisories} advisories (at least {MIN_ADVISORIES} expected): refusing a check against a truncated database",
            snapshot.display()
        );
    }
    let db = prepare_checkout(snapshot)?;
    say(&format!(
        "  {advisories} advisories from {} (prepared at {})",
        snapshot.display(),
        db.display()
    ));
    let metadata = output("cargo", &["metadata", "--format-version", "1", "--locked"])?;
    std::fs::write(METADATA, metadata).with_context(|| format!("cannot write {METADATA}"))?;
    run(
        "cargo",
        &[
            "deny",
            "--offline",
            "--metadata-path",
            METADATA,
            "check",
            "advisories",
        ],
    )
}

/// Copies the snapshot into a git checkout where cargo-deny looks for it, unless the same
/// snapshot was prepared before.
fn prepare_checkout(snapshot: &Path) -> Result<PathBuf> {
    let db = Path::new(DB_PARENT).join(DB_FOLDER);
    let identity = snapshot_identity(snapshot)?;
    if std::fs::read_to_string(db.join(STAMP)).is_ok_and(|done| done == identity) {
        return Ok(db);
    }
    if db.exists() {
        std::fs::remove_dir_all(&db).with_context(|| format!("cannot remove {}", db.display()))?;
    }
    std::fs::create_dir_all(&db).with_context(|| format!("cannot create {}", db.display()))?;
    let source = format!("{}/.", snapshot.display());
    let target = db.display().to_string();
    run("cp", &["-r", &source, &target])?;
    std::fs::write(db.join(STAMP), &identity)?;
    let git = |args: &[&str]| {
        let mut full = vec!["-C", target.as_str()];
        full.extend_from_slice(args);
        run("git", &full)
    };
    git(&["init", "--quiet", "--initial-branch=main"])?;
    git(&["add", "--all"])?;
    git(&[
        "-c",
        "user.name=trove-netiso",
        "-c",
        "user.email=ci@trove-netiso.invalid",
        "commit",
        "--quiet",
        "--message",
        "RustSec advisory database snapshot",
    ])?;
    Ok(db)
}

/// The snapshot's `SNAPSHOT.md` names the upstream commit it was taken at.
fn snapshot_identity(snapshot: &Path) -> Result<String> {
    let path = snapshot.join("SNAPSHOT.md");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Advisory files (`crates/<crate>/RUSTSEC-*.md`).
fn count_advisories(crates: &Path) -> Result<usize> {
    let mut count = 0;
    for entry in
        std::fs::read_dir(crates).with_context(|| format!("cannot read {}", crates.display()))?
    {
        let dir = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir)? {
            let name = file?.file_name();
            if name.to_string_lossy().starts_with("RUSTSEC-") {
                count += 1;
            }
        }
    }
    Ok(count)
}
