//! Whether the database may start: open, refused (fail closed), or pending while the agent
//! retries a failed isolation. The RPC handlers consult it; the agent's isolation retry
//! decides it.

use std::time::Duration;

use tokio::sync::watch;

/// The gate's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateState {
    /// The database may start.
    Open,
    /// Isolation failed and is being retried: the database may not start yet.
    Pending(String),
    /// The database is never started by this run.
    Refused(String),
}

/// The handlers' view of the gate.
#[derive(Debug, Clone)]
pub struct DatabaseGate {
    state: watch::Receiver<GateState>,
}

/// The side that decides a pending gate.
#[derive(Debug)]
pub struct GateControl {
    state: watch::Sender<GateState>,
}

impl DatabaseGate {
    /// A gate decided once and for all: open, or refused with `refusal`.
    pub fn fixed(refusal: Option<String>) -> Self {
        let state = refusal.map_or(GateState::Open, GateState::Refused);
        Self {
            state: watch::channel(state).1,
        }
    }

    /// A gate pending for `reason` until its control decides it.
    pub fn pending(reason: String) -> (Self, GateControl) {
        let (sender, receiver) = watch::channel(GateState::Pending(reason));
        (Self { state: receiver }, GateControl { state: sender })
    }

    /// The state now.
    pub fn state(&self) -> GateState {
        self.state.borrow().clone()
    }

    /// Why the database may not start now (pending or refused), if it may not.
    pub fn refusal_now(&self) -> Option<String> {
        match self.state() {
            GateState::Open => None,
            GateState::Pending(reason) => Some(format!("isolation pending (retrying): {reason}")),
            GateState::Refused(reason) => Some(reason),
        }
    }

    /// Waits, at most `limit`, until the gate is no longer pending; then why the database may
    /// not start, if it may not. A gate still pending after `limit`, or whose control is gone
    /// while pending, refuses.
    pub async fn decided(&self, limit: Duration) -> Option<String> {
        let mut state = self.state.clone();
        let waited = tokio::time::timeout(
            limit,
            state.wait_for(|s| !matches!(s, GateState::Pending(_))),
        )
        .await;
        match waited {
            Ok(Ok(_)) => self.refusal_now(),
            Ok(Err(_)) | Err(_) => Some(
                self.refusal_now()
                    .unwrap_or_else(|| "isolation was not decided".to_owned()),
            ),
        }
    }

    /// Resolves when the gate becomes refused (never if it opens).
    pub async fn refused(&self) -> String {
        let mut state = self.state.clone();
        loop {
            if let GateState::Refused(reason) = &*state.borrow_and_update() {
                return reason.clone();
            }
            if state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl GateControl {
    /// Lets the database start.
    pub fn open(&self) {
        self.state.send_replace(GateState::Open);
    }

    /// Refuses the database for good.
    pub fn refuse(&self, reason: String) {
        self.state.send_replace(GateState::Refused(reason));
    }

    /// Keeps the gate pending with a new reason (the latest attempt's error).
    pub fn still_pending(&self, reason: String) {
        self.state.send_replace(GateState::Pending(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pending_gate_waits_for_its_decision() {
        assert_eq!(DatabaseGate::fixed(None).refusal_now(), None);
        assert_eq!(
            DatabaseGate::fixed(Some("no".into()))
                .decided(Duration::ZERO)
                .await,
            Some("no".into())
        );
        let (gate, control) = DatabaseGate::pending("NIC not found".into());
        assert!(gate.refusal_now().unwrap().contains("isolation pending"));
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.decided(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        control.open();
        assert_eq!(waiting.await.unwrap(), None);

        let (gate, control) = DatabaseGate::pending("NIC not found".into());
        let refused = tokio::spawn({
            let gate = gate.clone();
            async move { gate.refused().await }
        });
        control.refuse("gave up".into());
        assert_eq!(refused.await.unwrap(), "gave up");
        assert_eq!(gate.decided(Duration::ZERO).await, Some("gave up".into()));

        let (gate, _control) = DatabaseGate::pending("slow".into());
        let text = gate.decided(Duration::from_millis(10)).await.unwrap();
        assert!(text.contains("slow"), "{text}");
    }
}
