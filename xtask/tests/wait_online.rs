//! `contrib/ifupdown/wait-online`, the package's replacement for ifupdown's wait-online on a
//! guest: it must leave out the interfaces the boot isolation excluded (else every reboot
//! waits 300 s for the tenant NIC before Docker starts), wait for the others, and hand over to
//! Debian's script when there is nothing to leave out. Driven with a stand-in `ifquery` that
//! knows two "auto" interfaces, `ens3` and `ens4`.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contrib/ifupdown/wait-online"
);

/// A scratch directory with a stand-in `ifquery`, a stand-in Debian script and the files the
/// script reads; removed on drop.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// `up`: the interfaces `ifquery --state` reports as configured.
    fn new(name: &str, up: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("wait-online-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).expect("scratch directory");
        // --list prints the auto interfaces minus every -X; --state NAME succeeds when up.
        let ifquery = format!(
            "#!/bin/sh\n\
             echo \"$*\" >> {log}\n\
             excluded=' '\n\
             state=''\n\
             while [ $# -gt 0 ]; do\n\
               case \"$1\" in\n\
                 -X) excluded=\"$excluded$2 \"; shift 2 ;;\n\
                 --state) state=$2; shift 2 ;;\n\
                 *) shift ;;\n\
               esac\n\
             done\n\
             if [ -n \"$state\" ]; then\n\
               case ' {up} ' in *\" $state \"*) echo \"$state=$state\"; exit 0 ;; esac\n\
               exit 1\n\
             fi\n\
             for iface in ens3 ens4; do\n\
               case \"$excluded\" in *\" $iface \"*) ;; *) echo $iface ;; esac\n\
             done\n",
            log = dir.join("ifquery.log").display(),
            up = up.join(" "),
        );
        write_executable(&dir.join("bin/ifquery"), &ifquery);
        write_executable(
            &dir.join("debian-wait-online"),
            &format!(
                "#!/bin/sh\necho debian >> {}\n",
                dir.join("debian.log").display()
            ),
        );
        Self { dir }
    }

    fn exclusions(&self, content: &str) -> &Self {
        fs::write(self.dir.join("networking.env"), content).expect("exclusions file");
        self
    }

    fn defaults(&self, content: &str) -> &Self {
        fs::write(self.dir.join("networking"), content).expect("defaults file");
        self
    }

    fn run(&self) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(SCRIPT)
            .env("PATH", path)
            .env(
                "TROVE_NETISO_DEBIAN_WAIT_ONLINE",
                self.dir.join("debian-wait-online"),
            )
            .env(
                "TROVE_NETISO_NETWORKING_DEFAULTS",
                self.dir.join("networking"),
            )
            .env(
                "TROVE_NETISO_NETWORKING_ENV",
                self.dir.join("networking.env"),
            )
            .output()
            .expect("run contrib/ifupdown/wait-online")
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_executable(path: &Path, content: &str) {
    fs::write(path, content).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_excluded_tenant_nic_is_not_waited_for() {
    let sandbox = Sandbox::new("excluded", &["ens3"]);
    sandbox.exclusions("# written at boot\nEXCLUDE_INTERFACES=\"ens4\"\n");
    let output = sandbox.run();
    assert!(output.status.success(), "{}", describe(&output));
    let queries = sandbox.log("ifquery.log");
    assert!(
        queries.contains("--state ens3"),
        "ens3 was not checked: {queries}"
    );
    assert!(
        !queries.contains("--state ens4"),
        "ens4 was waited for: {queries}"
    );
    assert_eq!(sandbox.log("debian.log"), "", "Debian's script ran instead");
}

#[test]
fn an_interface_that_stays_down_fails_after_the_timeout() {
    let sandbox = Sandbox::new("timeout", &[]);
    sandbox
        .exclusions("EXCLUDE_INTERFACES=\"ens4\"\n")
        .defaults("WAIT_ONLINE_TIMEOUT=2\n");
    let output = sandbox.run();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not up within 2 s"),
        "{}",
        describe(&output)
    );
}

#[test]
fn without_exclusions_debians_script_runs() {
    let sandbox = Sandbox::new("plain", &["ens3", "ens4"]);
    let output = sandbox.run();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(sandbox.log("debian.log"), "debian\n");
    assert_eq!(
        sandbox.log("ifquery.log"),
        "",
        "the script queried ifupdown itself"
    );
}

#[test]
fn an_operators_own_wait_method_is_left_to_debians_script() {
    let sandbox = Sandbox::new("method", &[]);
    sandbox
        .exclusions("EXCLUDE_INTERFACES=\"ens4\"\n")
        .defaults("WAIT_ONLINE_METHOD=route\n");
    let output = sandbox.run();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(sandbox.log("debian.log"), "debian\n");
}

#[test]
fn an_exclusions_line_with_shell_syntax_is_ignored() {
    let sandbox = Sandbox::new("hostile", &["ens3", "ens4"]);
    sandbox.exclusions("EXCLUDE_INTERFACES=\"$(touch pwned) ens4\"\n");
    let output = sandbox.run();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        sandbox.log("debian.log"),
        "debian\n",
        "a hostile line was used"
    );
    assert!(!Path::new("pwned").exists());
}
