//! Calling one method on many guests at once, as Trove's control plane reaches its fleet: a
//! bounded number of calls in flight, a timeout per call, and one outcome per guest, so an
//! operator's tool sees at a glance who answered, who refused and who is silent.
//!
//! All calls share one client and one reply queue; each guest's requests are encrypted with
//! its own instance key.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::task::JoinSet;

use crate::client::RpcClient;
use crate::crypto::InstanceKey;
use crate::error::CallError;
use crate::serializer::{Context, Serializer};
use crate::topology::Target;
use crate::transport::Transport;

/// One guest to call: its id (`guestagent.<id>`) and how its requests are serialized.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The instance id the guest's agent serves.
    pub id: String,
    /// `Secure` with the guest's instance key, or `Plain` when secure RPC is off.
    pub serializer: Serializer,
}

impl Guest {
    /// A guest with its instance key (`None`: secure RPC off, plain JSON).
    pub fn new(id: impl Into<String>, key: Option<InstanceKey>) -> Self {
        Self {
            id: id.into(),
            serializer: key.map_or(Serializer::Plain, Serializer::Secure),
        }
    }
}

/// How hard a sweep pushes: calls in flight at once and the patience per call.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SweepOptions {
    /// Calls in flight at once (the broker and the caller's CPU bound the useful value).
    pub concurrency: NonZeroUsize,
    /// How long one call may take, publishing included, before its guest counts as silent.
    pub timeout: Duration,
}

impl Default for SweepOptions {
    /// 64 calls in flight, 30 s per call (a guest busy with a long operation still answers a
    /// ping within seconds).
    fn default() -> Self {
        Self {
            concurrency: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            timeout: Duration::from_secs(30),
        }
    }
}

impl SweepOptions {
    /// `concurrency` calls in flight at once, each given `timeout`.
    pub fn new(concurrency: NonZeroUsize, timeout: Duration) -> Self {
        Self {
            concurrency,
            timeout,
        }
    }
}

/// What became of one guest's call.
#[derive(Debug)]
pub enum Outcome {
    /// The guest answered with this result.
    Answered(Value),
    /// The guest answered with a failure (wrong arguments, unknown method, its own error, a
    /// request it could not authenticate).
    Refused {
        /// The exception class the guest named.
        class: String,
        /// Its message (guests put no secrets in it).
        message: String,
    },
    /// No reply within the timeout: the guest is down, stuck or too slow.
    TimedOut,
    /// The call could not be made: no queue for the guest (the broker returned the request),
    /// the broker refused it, or the connection failed.
    Failed(CallError),
}

impl Outcome {
    fn of(result: Result<Value, CallError>) -> Self {
        match result {
            Ok(value) => Self::Answered(value),
            Err(CallError::Remote { class, message, .. }) => Self::Refused { class, message },
            Err(CallError::Timeout { .. }) => Self::TimedOut,
            Err(other) => Self::Failed(other),
        }
    }

    /// Whether the guest answered.
    pub fn is_answered(&self) -> bool {
        matches!(self, Self::Answered(_))
    }
}

/// One guest's outcome and how long its call took.
#[derive(Debug)]
pub struct GuestResult {
    /// The guest's id.
    pub guest_id: String,
    /// What became of the call.
    pub outcome: Outcome,
    /// From publishing the request to the reply (or the timeout, or the failure).
    pub elapsed: Duration,
}

/// Every guest's result, in the order the guests were given, and the sweep's wall time.
#[derive(Debug)]
pub struct Sweep {
    /// One result per guest.
    pub results: Vec<GuestResult>,
    /// From the first request to the last outcome.
    pub elapsed: Duration,
}

impl Sweep {
    /// How many guests had an outcome for which `kind` holds.
    pub fn count(&self, kind: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| kind(&r.outcome)).count()
    }

    /// The `quantile` (0.0 to 1.0, nearest rank) of the answered calls' round trips; `None`
    /// when no guest answered.
    pub fn answered_quantile(&self, quantile: f64) -> Option<Duration> {
        let mut times: Vec<Duration> = self
            .results
            .iter()
            .filter(|r| r.outcome.is_answered())
            .map(|r| r.elapsed)
            .collect();
        if times.is_empty() {
            return None;
        }
        times.sort_unstable();
        let last = times.len() - 1;
        let rank = (last as f64 * quantile.clamp(0.0, 1.0)).round() as usize;
        times.get(rank.min(last)).copied()
    }
}

/// A caller of many guests over one connection and one reply queue.
#[derive(Clone)]
pub struct FleetClient {
    client: RpcClient,
}

impl FleetClient {
    /// A client publishing to the control exchange `exchange` (Trove's `control_exchange`).
    pub fn new(transport: &Transport, exchange: &str) -> Self {
        Self {
            client: RpcClient::new(transport, exchange, Serializer::Plain),
        }
    }

    /// Calls `method` with `args` on every guest of `guests` (their `guestagent.<id>`
    /// topic), at most `options.concurrency` at a time, and waits for every outcome.
    pub async fn sweep(
        &self,
        guests: &[Guest],
        method: &str,
        args: &Map<String, Value>,
        context: &Context,
        options: &SweepOptions,
    ) -> Sweep {
        let started = Instant::now();
        let shared = Arc::new(SweepInput {
            guests: guests.to_vec(),
            method: method.to_owned(),
            args: args.clone(),
            context: context.clone(),
            timeout: options.timeout,
            next: AtomicUsize::new(0),
        });
        let workers = options.concurrency.get().min(guests.len());
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let client = self.client.clone();
            let input = Arc::clone(&shared);
            tasks.spawn(async move { input.work(&client).await });
        }
        let mut slots: Vec<Option<GuestResult>> = guests.iter().map(|_| None).collect();
        while let Some(done) = tasks.join_next().await {
            // A worker only ends by finishing its loop; a panic in it is a bug worth seeing.
            let finished = done.unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
            for (index, result) in finished {
                if let Some(slot) = slots.get_mut(index) {
                    *slot = Some(result);
                }
            }
        }
        Sweep {
            results: slots.into_iter().flatten().collect(),
            elapsed: started.elapsed(),
        }
    }

    /// Deletes the reply queue; later sweeps fail.
    pub async fn close(&self) {
        self.client.close().await;
    }
}

/// What every worker of one sweep reads, and the index of the next guest to call.
struct SweepInput {
    guests: Vec<Guest>,
    method: String,
    args: Map<String, Value>,
    context: Context,
    timeout: Duration,
    next: AtomicUsize,
}

impl SweepInput {
    /// Calls the next uncalled guest until none is left; returns (index, result) pairs.
    async fn work(&self, client: &RpcClient) -> Vec<(usize, GuestResult)> {
        let mut done = Vec::new();
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(guest) = self.guests.get(index) else {
                return done;
            };
            let target = Target::guest_agent(&guest.id);
            let started = Instant::now();
            let result = client
                .call_with(
                    &guest.serializer,
                    &target,
                    &self.method,
                    self.args.clone(),
                    &self.context,
                    self.timeout,
                )
                .await;
            done.push((
                index,
                GuestResult {
                    guest_id: guest.id.clone(),
                    outcome: Outcome::of(result),
                    elapsed: started.elapsed(),
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, ms: u64) -> GuestResult {
        GuestResult {
            guest_id: "g".into(),
            outcome,
            elapsed: Duration::from_millis(ms),
        }
    }

    #[test]
    fn call_errors_become_outcomes() {
        let refused = Outcome::of(Err(CallError::Remote {
            class: "TypeError".into(),
            module: "builtins".into(),
            message: "bad".into(),
        }));
        assert!(matches!(refused, Outcome::Refused { ref class, .. } if class == "TypeError"));
        let silent = Outcome::of(Err(CallError::Timeout {
            method: "rpc_ping".into(),
            timeout_ms: 5,
        }));
        assert!(matches!(silent, Outcome::TimedOut));
        let failed = Outcome::of(Err(CallError::BadReply("x".into())));
        assert!(matches!(failed, Outcome::Failed(CallError::BadReply(_))));
        assert!(Outcome::of(Ok(Value::Bool(true))).is_answered());
    }

    #[test]
    fn quantiles_count_answered_calls_only() {
        let sweep = Sweep {
            results: vec![
                result(Outcome::Answered(Value::Null), 1),
                result(Outcome::Answered(Value::Null), 3),
                result(Outcome::Answered(Value::Null), 2),
                result(Outcome::TimedOut, 500),
            ],
            elapsed: Duration::from_millis(500),
        };
        assert_eq!(sweep.answered_quantile(0.5), Some(Duration::from_millis(2)));
        assert_eq!(sweep.answered_quantile(1.0), Some(Duration::from_millis(3)));
        assert_eq!(sweep.count(Outcome::is_answered), 3);
        assert_eq!(sweep.count(|o| matches!(o, Outcome::TimedOut)), 1);
        let empty = Sweep {
            results: Vec::new(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(empty.answered_quantile(0.5), None);
    }
}
