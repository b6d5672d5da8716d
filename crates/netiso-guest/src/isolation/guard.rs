//! Keeping the tenant NIC isolated: re-isolate it whenever it reappears in the VM's namespace
//! (Docker returns it when the container stops; udev/netplan/DHCP bring it up). Trove has no
//! such guard.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, Stream, StreamExt};
use netiso_netlink::{LinkEvent, NetlinkHandle, Result as NetlinkResult, Rtnetlink};
use tokio::{sync::broadcast, task::JoinHandle};

use super::{ApplyReport, IsolationError, IsolationTarget, WhenAbsent, apply, plan};

/// How the guard behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardOptions {
    /// Re-check even without events, in case a notification was lost.
    pub recheck_interval: Duration,
}

impl Default for GuardOptions {
    fn default() -> Self {
        Self {
            recheck_interval: Duration::from_secs(30),
        }
    }
}

/// What the guard did, for whoever listens (logs, health checks, tests).
#[derive(Debug, Clone)]
pub enum GuardReport {
    /// The NIC had come back and has been isolated again.
    Reisolated(ApplyReport),
    /// Re-isolation failed; the guard keeps trying on the next event or re-check.
    Failed(Arc<IsolationError>),
    /// The event stream failed; the guard keeps going on its periodic re-check.
    EventsFailed(String),
}

/// A running guard; dropping it (or [`Guard::stop`]) stops the watch.
#[derive(Debug)]
pub struct Guard {
    task: JoinHandle<()>,
    reports: broadcast::Sender<GuardReport>,
}

/// At most this many already-queued events are folded into one re-isolation.
const MAX_EVENTS_PER_PASS: usize = 1024;

impl Guard {
    /// Watches the namespace of `handle` for the tenant NIC: link events (the NIC comes back
    /// or up), address events (an address put on it, which raises no link event when it is
    /// down) and route events (a route added through it while it is up). Must be called
    /// inside a tokio runtime.
    pub fn start(
        handle: Arc<NetlinkHandle>,
        target: IsolationTarget,
        options: GuardOptions,
    ) -> Result<Self, IsolationError> {
        let events =
            handle
                .link_address_and_route_events()
                .map_err(|error| IsolationError::Netlink {
                    mac: target.mac,
                    file: target.source.clone(),
                    step: "subscribe to link, address and route events".into(),
                    error,
                })?;
        Ok(Self::with_events(handle, events, target, options))
    }

    /// Watches `events` and isolates through `rtnl`: the seam for tests with a fake.
    pub fn with_events<R, S>(
        rtnl: Arc<R>,
        events: S,
        target: IsolationTarget,
        options: GuardOptions,
    ) -> Self
    where
        R: Rtnetlink + 'static,
        S: Stream<Item = NetlinkResult<LinkEvent>> + Send + Unpin + 'static,
    {
        let (reports, _) = broadcast::channel(64);
        let task = tokio::spawn(watch(rtnl, events, target, options, reports.clone()));
        Self { task, reports }
    }

    /// A receiver of the guard's reports from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<GuardReport> {
        self.reports.subscribe()
    }

    /// Stops the guard.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn concerns(event: &LinkEvent, target: &IsolationTarget) -> bool {
    match event {
        LinkEvent::Changed(link) => link.mac == Some(target.mac),
        LinkEvent::Removed(_) | LinkEvent::AddressRemoved(_) | LinkEvent::RouteRemoved(_) => false,
        // Cheap to check (one plan), and neither an address on a down link nor a route through
        // an up one raises a link event. Which link is the tenant's is only known by MAC, so
        // every addition counts.
        LinkEvent::AddressAdded(_) | LinkEvent::RouteAdded(_) => true,
        LinkEvent::Overrun => true,
    }
}

async fn reisolate<R: Rtnetlink + 'static>(
    rtnl: &Arc<R>,
    target: &IsolationTarget,
    reports: &broadcast::Sender<GuardReport>,
) {
    let rtnl = Arc::clone(rtnl);
    let target = target.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let planned = plan(&*rtnl, &target, WhenAbsent::Isolated)?;
        if planned.is_noop() {
            return Ok(None);
        }
        tracing::warn!(mac = %target.mac, "tenant NIC is back in the VM namespace; isolating it again");
        apply(&*rtnl, &planned).map(Some)
    })
    .await;
    let report = match outcome {
        Ok(Ok(None)) => return,
        Ok(Ok(Some(report))) => GuardReport::Reisolated(report),
        Ok(Err(error)) => {
            tracing::error!(%error, "guard could not re-isolate the tenant NIC");
            GuardReport::Failed(Arc::new(error))
        }
        Err(join) => GuardReport::EventsFailed(format!("re-isolation task failed: {join}")),
    };
    // Nobody listening is fine.
    let _ = reports.send(report);
}

async fn watch<R, S>(
    rtnl: Arc<R>,
    mut events: S,
    target: IsolationTarget,
    options: GuardOptions,
    reports: broadcast::Sender<GuardReport>,
) where
    R: Rtnetlink + 'static,
    S: Stream<Item = NetlinkResult<LinkEvent>> + Send + Unpin + 'static,
{
    // Close the window between the caller's apply and our subscription.
    reisolate(&rtnl, &target, &reports).await;
    let mut recheck = tokio::time::interval(options.recheck_interval);
    recheck.tick().await;
    loop {
        tokio::select! {
            event = events.next() => {
                let mut relevant = match event {
                    Some(Ok(event)) => concerns(&event, &target),
                    Some(Err(error)) => {
                        let _ = reports.send(GuardReport::EventsFailed(error.to_string()));
                        true
                    }
                    None => {
                        let _ = reports.send(GuardReport::EventsFailed("link event stream ended".into()));
                        break;
                    }
                };
                // Fold a burst of queued events into one pass.
                for _ in 0..MAX_EVENTS_PER_PASS {
                    match events.next().now_or_never() {
                        Some(Some(Ok(event))) => relevant |= concerns(&event, &target),
                        Some(Some(Err(_))) => relevant = true,
                        Some(None) | None => break,
                    }
                }
                if relevant {
                    reisolate(&rtnl, &target, &reports).await;
                }
            }
            _ = recheck.tick() => reisolate(&rtnl, &target, &reports).await,
        }
    }
    // Without events, keep the periodic re-check: fail closed, never stop guarding.
    loop {
        recheck.tick().await;
        reisolate(&rtnl, &target, &reports).await;
    }
}
