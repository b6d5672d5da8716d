//! The soak's schedule: which fault comes next, what the control plane sends with it, and
//! whether the fault lands while that request is in flight. A pure function of the seed, so
//! a failing run is replayed by its seed alone.

use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::{RngExt as _, SeedableRng as _};

/// The guest set-ups the soak runs through, one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Segment {
    /// Docker with the hostnic plugin, `network_isolation = True`.
    DockerIsolated,
    /// containerd with the agent's own namespace, `network_isolation = True`.
    ContainerdIsolated,
    /// Docker's bridge, `network_isolation = False`.
    DockerBridged,
}

impl Segment {
    /// Every segment, in the order a run takes them.
    pub const ALL: [Self; 3] = [
        Self::DockerIsolated,
        Self::ContainerdIsolated,
        Self::DockerBridged,
    ];

    /// The name in the report and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DockerIsolated => "docker-isolated",
            Self::ContainerdIsolated => "containerd-isolated",
            Self::DockerBridged => "docker-bridged",
        }
    }

    /// Whether the tenant NIC is taken from the VM.
    pub fn isolated(self) -> bool {
        !matches!(self, Self::DockerBridged)
    }

    /// The faults that mean something for this set-up (no plugin without Docker's isolation,
    /// no tenant DHCP where the VM owns the tenant NIC by design).
    pub fn faults(self) -> &'static [FaultKind] {
        use FaultKind::*;
        match self {
            Self::DockerIsolated => &[
                AgentKill,
                AgentRestart,
                PluginKill,
                PluginRestart,
                DockerdKill,
                BrokerNodeKill,
                BrokerStall,
                TenantDhcp,
                PluginStateCorrupt,
                AgentStateCorrupt,
                StateDirFull,
            ],
            // With containerd the tenant NIC stays in the database's own namespace even
            // while the database is stopped, so the VM's DHCP never sees it.
            Self::ContainerdIsolated => &[
                AgentKill,
                AgentRestart,
                ContainerdKill,
                BrokerNodeKill,
                BrokerStall,
                AgentStateCorrupt,
                StateDirFull,
            ],
            Self::DockerBridged => &[
                AgentKill,
                AgentRestart,
                DockerdKill,
                BrokerNodeKill,
                BrokerStall,
                AgentStateCorrupt,
                StateDirFull,
            ],
        }
    }
}

/// One kind of fault a real guest meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9` of the agent; started again as systemd would.
    AgentKill,
    /// The agent stopped with SIGTERM and started again.
    AgentRestart,
    /// `kill -9` of docker-hostnic; started again.
    PluginKill,
    /// docker-hostnic stopped with SIGTERM and started again.
    PluginRestart,
    /// `kill -9` of dockerd; started again with its command line.
    DockerdKill,
    /// `kill -9` of containerd; started again with its command line.
    ContainerdKill,
    /// `kill -9` of the RabbitMQ node leading the agent's queue; started again.
    BrokerNodeKill,
    /// The broker node the agent is connected to goes silent (connection stalled, not
    /// closed), then answers again.
    BrokerStall,
    /// The OS brings the tenant NIC up with its address and a default route, as DHCP would.
    TenantDhcp,
    /// The plugin's state file torn (truncated) under a crashed plugin.
    PluginStateCorrupt,
    /// One of the agent's state files torn under a crashed agent.
    AgentStateCorrupt,
    /// The agent's state directory full while it restarts and serves a request.
    StateDirFull,
}

impl FaultKind {
    /// The name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentKill => "agent-kill",
            Self::AgentRestart => "agent-restart",
            Self::PluginKill => "plugin-kill",
            Self::PluginRestart => "plugin-restart",
            Self::DockerdKill => "dockerd-kill",
            Self::ContainerdKill => "containerd-kill",
            Self::BrokerNodeKill => "broker-node-kill",
            Self::BrokerStall => "broker-stall",
            Self::TenantDhcp => "tenant-dhcp",
            Self::PluginStateCorrupt => "plugin-state-corrupt",
            Self::AgentStateCorrupt => "agent-state-corrupt",
            Self::StateDirFull => "state-dir-full",
        }
    }

    /// Whether the fault may land while a database request is in flight: the control plane
    /// and the broker faults, whose point is the request they interrupt. A killed agent loses
    /// a request it had taken (oslo's at-most-once), which says nothing about the transport.
    pub fn may_interrupt(self) -> bool {
        matches!(
            self,
            Self::BrokerNodeKill | Self::BrokerStall | Self::DockerdKill | Self::PluginKill
        )
    }
}

/// What the control plane sends in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `rpc_ping` (call).
    RpcPing,
    /// `restart` (call).
    Restart,
    /// `stop_db` (call), then `start_db_with_conf_changes` later in the same step, so the
    /// database is expected up when the step ends.
    StopThenStart,
    /// `start_db_with_conf_changes` (call) on a running database: the container recreated
    /// with the configuration.
    StartWithConfChanges,
}

impl Operation {
    const ALL: [Self; 4] = [
        Self::RpcPing,
        Self::Restart,
        Self::StopThenStart,
        Self::StartWithConfChanges,
    ];

    /// The name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RpcPing => "rpc_ping",
            Self::Restart => "restart",
            Self::StopThenStart => "stop_db+start_db_with_conf_changes",
            Self::StartWithConfChanges => "start_db_with_conf_changes",
        }
    }
}

/// One step: a fault, a request, and when the fault lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The fault.
    pub fault: FaultKind,
    /// The request sent with it.
    pub operation: Operation,
    /// `Some(delay)`: the fault lands this long after the request was sent, while it is in
    /// flight; `None`: the fault first, the request once the guest has recovered.
    pub during: Option<std::time::Duration>,
    /// How long the fault lasts where it has a length (a node down, a stall), in seconds.
    pub hold_seconds: u64,
}

/// The steps of one segment: every fault of the segment once, in a seeded order, then as
/// many seeded extra steps as the caller takes (an endless iterator).
#[derive(Debug)]
pub struct Schedule {
    rng: Xoshiro256PlusPlus,
    faults: &'static [FaultKind],
    first_round: Vec<FaultKind>,
}

impl Schedule {
    /// The schedule of `segment` for `seed` (each segment draws from its own stream, so
    /// cutting a segment short does not change the next one).
    pub fn new(seed: u64, segment: Segment) -> Self {
        let stream = Segment::ALL
            .iter()
            .position(|s| *s == segment)
            .unwrap_or_default() as u64;
        let mut rng =
            Xoshiro256PlusPlus::seed_from_u64(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut first_round = segment.faults().to_vec();
        first_round.shuffle(&mut rng);
        first_round.reverse();
        Self {
            rng,
            faults: segment.faults(),
            first_round,
        }
    }

    /// How many steps the first round has: the steps that make every fault of the segment
    /// happen at least once.
    pub fn first_round_len(&self) -> usize {
        self.faults.len()
    }
}

impl Iterator for Schedule {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        let fault = match self.first_round.pop() {
            Some(fault) => fault,
            None => *self.faults.choose(&mut self.rng)?,
        };
        let operation = *Operation::ALL.choose(&mut self.rng)?;
        let during =
            (fault.may_interrupt() && operation != Operation::RpcPing && self.rng.random_bool(0.5))
                .then(|| std::time::Duration::from_millis(self.rng.random_range(0..1500)));
        let hold_seconds = self.rng.random_range(2..8);
        Some(Step {
            fault,
            operation,
            during,
            hold_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_steps() {
        for segment in Segment::ALL {
            let first: Vec<Step> = Schedule::new(42, segment).take(40).collect();
            let again: Vec<Step> = Schedule::new(42, segment).take(40).collect();
            assert_eq!(first, again, "{segment:?}");
        }
    }

    #[test]
    fn another_seed_gives_another_order() {
        let one: Vec<FaultKind> = Schedule::new(1, Segment::DockerIsolated)
            .take(30)
            .map(|s| s.fault)
            .collect();
        let other: Vec<FaultKind> = Schedule::new(2, Segment::DockerIsolated)
            .take(30)
            .map(|s| s.fault)
            .collect();
        assert_ne!(one, other);
    }

    #[test]
    fn the_first_round_has_every_fault_of_the_segment_once() {
        for segment in Segment::ALL {
            for seed in [0, 7, 1234, u64::MAX] {
                let schedule = Schedule::new(seed, segment);
                let round = schedule.first_round_len();
                let mut seen: Vec<FaultKind> = schedule.take(round).map(|s| s.fault).collect();
                seen.sort();
                let mut wanted = segment.faults().to_vec();
                wanted.sort();
                assert_eq!(seen, wanted, "{segment:?} seed {seed}");
            }
        }
    }

    #[test]
    fn only_transport_and_daemon_faults_land_during_a_request() {
        for step in Schedule::new(99, Segment::DockerIsolated).take(500) {
            if step.during.is_some() {
                assert!(step.fault.may_interrupt(), "{step:?}");
                assert_ne!(step.operation, Operation::RpcPing, "{step:?}");
            }
            assert!((2..8).contains(&step.hold_seconds), "{step:?}");
        }
    }

    #[test]
    fn segments_offer_only_faults_that_apply_to_them() {
        assert!(
            !Segment::DockerBridged
                .faults()
                .contains(&FaultKind::TenantDhcp)
        );
        assert!(
            !Segment::DockerBridged
                .faults()
                .contains(&FaultKind::PluginKill)
        );
        assert!(
            !Segment::ContainerdIsolated
                .faults()
                .contains(&FaultKind::DockerdKill)
        );
        assert!(
            !Segment::DockerIsolated
                .faults()
                .contains(&FaultKind::ContainerdKill)
        );
    }
}
