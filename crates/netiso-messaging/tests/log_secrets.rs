//! Scans every test log (`<target>/tmp/test-logs`, written by the RPC and agent test suites)
//! for the secrets the suites send: instance keys, passwords, tokens, configuration contents
//! and the broker password. Within `cargo test --workspace` it sees the logs written so far;
//! `cargo xtask ci` runs it once more after every other test, over all of them.

use netiso_messaging::test_support::{known_secrets, log_files, scan_files};

#[test]
fn no_test_log_holds_a_known_secret() {
    let files = log_files(env!("CARGO_TARGET_TMPDIR")).expect("read the test-log folder");
    // An empty folder would make the scan pass without looking at anything: the suites that
    // run before this one (and every suite, when `cargo xtask ci` runs it last) write there.
    assert!(
        !files.is_empty(),
        "no test log to scan in {}/test-logs: run the RPC test suites first",
        env!("CARGO_TARGET_TMPDIR")
    );
    let secrets = known_secrets();
    let findings = scan_files(&files, &secrets).expect("read the test logs");
    let lines: usize = files
        .iter()
        .map(|f| std::fs::read(f).map_or(0, |b| b.split(|&c| c == b'\n').count()))
        .sum();
    println!(
        "log secret scan: {} files, {lines} lines, {} secrets searched, {} found",
        files.len(),
        secrets.len(),
        findings.len()
    );
    assert!(
        findings.is_empty(),
        "secrets found in test logs:\n{}",
        findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
