//! The exit statuses of the daemons (`trove-guest-agent`, `docker-hostnic`), defined once for
//! both and listed in docs/operations.md: systemd's `RestartPreventExitStatus=` and operators'
//! scripts tell kinds of failure apart by them. Values follow BSD's sysexits.h, which systemd
//! and most Unix tools already know.

/// A check command (`preflight`, `isolate --verify`) ran and found a failure, or an error
/// of no more specific kind.
pub const FAILURE: u8 = 1;
/// A dependency (the container runtime, the broker) cannot be reached (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// The kernel refused (EX_OSERR): for the agent, isolation failed (the tenant NIC could not be
/// taken away from the VM, netlink refused); for the plugin, its network namespace handle or
/// its socket cannot be set up.
pub const ISOLATION: u8 = 71;
/// The configuration (files, flags, the environment systemd passes) is unusable
/// (EX_CONFIG): restarting cannot help until an operator fixes it.
pub const CONFIG: u8 = 78;
