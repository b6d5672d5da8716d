//! Publisher-confirm bookkeeping for one channel. amqprs reports acks, nacks and returns only
//! through channel callbacks (acks possibly merged with `multiple`), so every publish registers
//! its delivery tag here and waits on a oneshot that the callbacks complete.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

/// How the broker settled one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// basic.ack: the broker took responsibility for the message.
    Acked,
    /// basic.nack: the broker could not take it.
    Nacked,
    /// basic.return then basic.ack: a mandatory message had no route.
    Returned {
        /// AMQP reply code (312 NO_ROUTE).
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The channel or connection closed first; the message may or may not have arrived.
    Lost(String),
}

struct Pending {
    exchange: String,
    routing_key: String,
    mandatory: bool,
    returned: Option<(u16, String)>,
    waiter: oneshot::Sender<ConfirmOutcome>,
}

/// Outstanding publishes of one confirm-mode channel, by delivery tag.
#[derive(Default)]
pub struct ConfirmTracker {
    pending: BTreeMap<u64, Pending>,
    closed: Option<String>,
}

impl ConfirmTracker {
    /// Registers a publish about to be sent with `tag`; the receiver resolves when settled.
    pub fn register(
        &mut self,
        tag: u64,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
    ) -> oneshot::Receiver<ConfirmOutcome> {
        let (waiter, receiver) = oneshot::channel();
        if let Some(reason) = &self.closed {
            let _ = waiter.send(ConfirmOutcome::Lost(reason.clone()));
            return receiver;
        }
        self.pending.insert(
            tag,
            Pending {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                mandatory,
                returned: None,
                waiter,
            },
        );
        receiver
    }

    /// Drops a registration whose publish was never sent.
    pub fn forget(&mut self, tag: u64) {
        self.pending.remove(&tag);
    }

    /// basic.ack for `tag` (and every lower tag when `multiple`).
    pub fn ack(&mut self, tag: u64, multiple: bool) {
        for pending in self.take(tag, multiple) {
            let outcome = match pending.returned {
                Some((code, text)) => ConfirmOutcome::Returned { code, text },
                None => ConfirmOutcome::Acked,
            };
            let _ = pending.waiter.send(outcome);
        }
    }

    /// basic.nack for `tag` (and every lower tag when `multiple`).
    pub fn nack(&mut self, tag: u64, multiple: bool) {
        for pending in self.take(tag, multiple) {
            let _ = pending.waiter.send(ConfirmOutcome::Nacked);
        }
    }

    /// basic.return: carries no delivery tag, but on one channel it precedes the ack of its
    /// message, so it belongs to the oldest unsettled mandatory publish with the same route.
    pub fn returned(&mut self, exchange: &str, routing_key: &str, code: u16, text: &str) {
        if let Some(pending) = self.pending.values_mut().find(|p| {
            p.mandatory
                && p.returned.is_none()
                && p.exchange == exchange
                && p.routing_key == routing_key
        }) {
            pending.returned = Some((code, text.to_owned()));
        }
    }

    /// The channel is gone: every outstanding publish is lost, and so is every later one.
    pub fn close(&mut self, reason: &str) {
        self.closed = Some(reason.to_owned());
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.waiter.send(ConfirmOutcome::Lost(reason.to_owned()));
        }
    }

    /// Number of unsettled publishes.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    fn take(&mut self, tag: u64, multiple: bool) -> Vec<Pending> {
        if multiple {
            let rest = self.pending.split_off(&(tag + 1));
            std::mem::replace(&mut self.pending, rest)
                .into_values()
                .collect()
        } else {
            self.pending.remove(&tag).into_iter().collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_and_out_of_order_acks_settle_the_right_publishes() {
        let mut tracker = ConfirmTracker::default();
        let mut receivers: Vec<_> = (1..=5)
            .map(|tag| tracker.register(tag, "x", "k", false))
            .collect();
        tracker.ack(4, false);
        assert_eq!(receivers[3].try_recv().unwrap(), ConfirmOutcome::Acked);
        assert!(receivers[0].try_recv().is_err());
        tracker.ack(3, true);
        for receiver in &mut receivers[0..3] {
            assert_eq!(receiver.try_recv().unwrap(), ConfirmOutcome::Acked);
        }
        tracker.nack(5, true);
        assert_eq!(receivers[4].try_recv().unwrap(), ConfirmOutcome::Nacked);
        assert_eq!(tracker.outstanding(), 0);
    }

    #[test]
    fn a_return_marks_the_oldest_matching_mandatory_publish() {
        let mut tracker = ConfirmTracker::default();
        let mut plain = tracker.register(1, "", "reply_a", false);
        let mut first = tracker.register(2, "", "reply_a", true);
        let mut other = tracker.register(3, "", "reply_b", true);
        tracker.returned("", "reply_a", 312, "NO_ROUTE");
        tracker.ack(3, true);
        assert_eq!(plain.try_recv().unwrap(), ConfirmOutcome::Acked);
        assert_eq!(
            first.try_recv().unwrap(),
            ConfirmOutcome::Returned {
                code: 312,
                text: "NO_ROUTE".into()
            }
        );
        assert_eq!(other.try_recv().unwrap(), ConfirmOutcome::Acked);
    }

    #[test]
    fn closing_loses_outstanding_and_later_publishes() {
        let mut tracker = ConfirmTracker::default();
        let mut before = tracker.register(1, "x", "k", false);
        tracker.close("connection reset");
        assert_eq!(
            before.try_recv().unwrap(),
            ConfirmOutcome::Lost("connection reset".into())
        );
        let mut after = tracker.register(2, "x", "k", false);
        assert!(matches!(after.try_recv().unwrap(), ConfirmOutcome::Lost(_)));
    }
}
