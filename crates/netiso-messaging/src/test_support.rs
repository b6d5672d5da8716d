//! Test logs and the secret scan (feature `test-support`): every test suite that touches RPC
//! writes its tracing output to a file under one folder, and the scan fails when any known
//! secret (instance keys, passwords, tokens the suites send, the broker password) appears in
//! one of them. `tests/log_secrets.rs` runs the scan; `cargo xtask ci` runs it again after
//! every other test.

pub mod cluster;
pub mod partition;

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use netiso_config::TransportUrl;
use tracing_subscriber::EnvFilter;

/// The secret values the suites send, one per line (`#` comments), shared by every suite.
const KNOWN_SECRETS: &str = include_str!("../../../tests/known-secrets.txt");
/// The broker URL the tests use when `NETISO_TEST_AMQP_URL` is unset.
const DEFAULT_TEST_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Shorter secrets are searched only in the `:<password>@` form of a URL, so that a broker
/// password like `guest` does not match every mention of the guest agent.
const BARE_MATCH_MIN_LEN: usize = 8;

/// The folder holding every test log: `<target>/tmp/test-logs`, given the test's
/// `env!("CARGO_TARGET_TMPDIR")` (the same for every crate of the workspace).
pub fn log_dir(cargo_target_tmpdir: &str) -> PathBuf {
    Path::new(cargo_target_tmpdir).join("test-logs")
}

/// A new log file in the test-log folder, named after `suite` and this process.
pub fn log_file(cargo_target_tmpdir: &str, suite: &str) -> PathBuf {
    let dir = log_dir(cargo_target_tmpdir);
    if let Err(err) = fs::create_dir_all(&dir) {
        panic!("cannot create the test-log folder {}: {err}", dir.display());
    }
    dir.join(format!("{suite}-{}.log", std::process::id()))
}

/// Sends this process's tracing output, at debug level (`RUST_LOG` overrides), to a new file
/// of the test-log folder; returns its path. A second call in the same process keeps the
/// first subscriber and returns `None`.
pub fn init_file_tracing(cargo_target_tmpdir: &str, suite: &str) -> Option<PathBuf> {
    static INITIALIZED: OnceLock<()> = OnceLock::new();
    if INITIALIZED.set(()).is_err() {
        return None;
    }
    let path = log_file(cargo_target_tmpdir, suite);
    let file = match File::create(&path) {
        Ok(file) => file,
        Err(err) => panic!("cannot create the test log {}: {err}", path.display()),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init()
        .ok()
        .map(|()| path)
}

/// A secret to look for, and how it is named in a finding (never by its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The text searched.
    pub needle: String,
    /// What it is, for the report.
    pub label: String,
}

/// The shared list plus the broker password of `NETISO_TEST_AMQP_URL`.
pub fn known_secrets() -> Vec<Secret> {
    let mut secrets: Vec<Secret> = KNOWN_SECRETS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .enumerate()
        .map(|(index, value)| Secret {
            needle: value.to_owned(),
            label: format!("tests/known-secrets.txt entry {}", index + 1),
        })
        .collect();
    let url = std::env::var("NETISO_TEST_AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_URL.to_owned());
    if let Ok(parsed) = TransportUrl::from_str(&url) {
        for host in &parsed.hosts {
            if let Some(password) = &host.password {
                let password = password.expose();
                secrets.push(Secret {
                    needle: format!(":{password}@"),
                    label: "the broker password (in a URL)".into(),
                });
                if password.len() >= BARE_MATCH_MIN_LEN {
                    secrets.push(Secret {
                        needle: password.to_owned(),
                        label: "the broker password".into(),
                    });
                }
            }
        }
    }
    secrets
}

/// One secret found in one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The log file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// Which secret (its label, not its value).
    pub secret: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.secret)
    }
}

/// Scans files for secrets, line by line (invalid UTF-8 is read lossily).
pub fn scan_files(files: &[PathBuf], secrets: &[Secret]) -> std::io::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for file in files {
        let reader = BufReader::new(File::open(file)?);
        for (index, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            let text = String::from_utf8_lossy(&line);
            for secret in secrets {
                if text.contains(&secret.needle) {
                    findings.push(Finding {
                        file: file.clone(),
                        line: index + 1,
                        secret: secret.label.clone(),
                    });
                }
            }
        }
    }
    Ok(findings)
}

/// Every `*.log` file of the test-log folder (none when it does not exist yet).
pub fn log_files(cargo_target_tmpdir: &str) -> std::io::Result<Vec<PathBuf>> {
    let dir = log_dir(cargo_target_tmpdir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_names_file_line_and_secret_but_not_its_value() {
        let dir = std::env::temp_dir().join(format!("netiso-scan-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("a.log");
        fs::write(
            &log,
            b"clean line\nuser=admin pw=never-logged-s3cr3t\n\xff bytes\n",
        )
        .unwrap();
        let secrets = known_secrets();
        assert!(secrets.iter().any(|s| s.needle == "never-logged-s3cr3t"));
        let findings = scan_files(std::slice::from_ref(&log), &secrets).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].line, 2);
        assert!(!findings[0].to_string().contains("never-logged"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
