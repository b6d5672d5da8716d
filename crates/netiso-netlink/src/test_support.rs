//! Throwaway network namespaces for real-kernel tests (feature `test-support`).
//!
//! Each [`TestNamespace`] has a unique name (`nti-<pid>-<n>`), a [`NetlinkHandle`] bound to it,
//! and is deleted on drop, also when the test panics; deleting it destroys the veths inside.
//! Tests never create links in the host namespace: they create them inside a test namespace.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Namespace, NetlinkHandle, Rtnetlink, VethSpec};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Panics with a clear message unless the process runs as root: real-kernel tests must fail,
/// never skip, when they cannot run.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root (network namespaces and veth pairs): run it as root, e.g. `sudo -E cargo test`"
        );
    }
}

/// A unique interface name (<= 15 characters): `prefix` (at most 4 characters) + pid + counter.
pub fn unique_link_name(prefix: &str) -> String {
    assert!(
        prefix.len() <= 4,
        "link name prefix {prefix:?} is longer than 4 characters"
    );
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{:x}{n:x}", std::process::id());
    assert!(
        name.len() <= crate::MAX_IFNAME_LEN,
        "generated link name {name} is too long"
    );
    name
}

/// A named network namespace that exists for the life of the value.
pub struct TestNamespace {
    name: String,
    handle: NetlinkHandle,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    /// Creates a fresh namespace with its loopback up. Panics (never skips) when not root.
    pub fn new() -> Self {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("nti-{}-{n}", std::process::id());
        let namespace = Namespace::create(&name)
            .unwrap_or_else(|e| panic!("cannot create test namespace {name}: {e}"));
        // From here on Drop removes the namespace, whatever fails next.
        let handle = match NetlinkHandle::in_namespace(&namespace) {
            Ok(handle) => handle,
            Err(e) => {
                let _ = Namespace::delete(&name);
                panic!("cannot open a netlink handle in {name}: {e}");
            }
        };
        let fixture = Self { name, handle };
        let lo = fixture
            .handle
            .link_by_name("lo")
            .expect("test namespace has a loopback");
        fixture
            .handle
            .set_link_up(lo.index, true)
            .expect("bring loopback up");
        fixture
    }

    /// The namespace's name under `/run/netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The netlink handle bound to the namespace.
    pub fn handle(&self) -> &NetlinkHandle {
        &self.handle
    }

    /// The namespace itself (for moves and `setns`).
    pub fn namespace(&self) -> &Namespace {
        self.handle.namespace()
    }

    /// Creates a veth pair inside this namespace with unique names built from the prefixes, and
    /// returns the names (`this end`, `peer end`). The peer goes to `peer_namespace` when given.
    pub fn veth(&self, prefix: &str, peer_namespace: Option<&TestNamespace>) -> (String, String) {
        let name = unique_link_name(prefix);
        let peer_name = unique_link_name(prefix);
        self.handle
            .create_veth(VethSpec {
                name: &name,
                peer_name: &peer_name,
                peer_namespace: peer_namespace.map(TestNamespace::namespace),
            })
            .unwrap_or_else(|e| panic!("create veth {name}/{peer_name} in {}: {e}", self.name));
        (name, peer_name)
    }
}

impl Default for TestNamespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if let Err(e) = Namespace::delete(&self.name) {
            // Drop cannot fail; say loudly what was left behind.
            eprintln!(
                "warning: could not delete test namespace {}: {e}",
                self.name
            );
        }
    }
}
