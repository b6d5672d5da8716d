//! The tenant window: from power-on, a client on the tenant network knocks on the VM's tenant
//! address every few milliseconds. An answer (a connection, or a reset: either means a host
//! holds the address) before the database container exists is the VM itself on the tenant
//! network, the exposure that isolation must close.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use netiso_netlink::Namespace;

/// How often the client knocks.
const PERIOD: Duration = Duration::from_millis(50);
/// How long one knock waits for an answer (ARP resolution included).
const KNOCK_LIMIT: Duration = Duration::from_millis(200);
/// A port nothing listens on in the VM: a reset is as good an answer as a connection.
pub const KNOCK_PORT: u16 = 9;

/// The answers seen so far, as offsets from the watch's start.
#[derive(Debug, Default)]
struct Seen {
    knocks: u64,
    answers: Vec<Duration>,
}

/// A background knocker in the client namespace; stopped on drop.
pub struct TenantWatch {
    started: Instant,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

/// What the watch saw between two instants.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Knocks made.
    pub knocks: u64,
    /// Knocks answered.
    pub answered: u64,
    /// From the first to the last answer (zero when one or none).
    pub span: Duration,
    /// The first answer, from the watch's start.
    pub first: Option<Duration>,
}

impl TenantWatch {
    /// Starts knocking on `target` from `client_netns`, counting from `started` (power-on).
    pub fn start(client_netns: &str, target: SocketAddr, started: Instant) -> Result<Self> {
        let namespace = Namespace::open(client_netns)
            .with_context(|| format!("opening the client namespace {client_netns}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let thread = {
            let stop = Arc::clone(&stop);
            let seen = Arc::clone(&seen);
            std::thread::Builder::new()
                .name("tenant-window".into())
                .spawn(move || {
                    let knocking = namespace.run(|| {
                        while !stop.load(Ordering::Relaxed) {
                            let answered = match TcpStream::connect_timeout(&target, KNOCK_LIMIT) {
                                Ok(_) => true,
                                Err(e) => e.kind() == ErrorKind::ConnectionRefused,
                            };
                            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                            seen.knocks += 1;
                            if answered {
                                seen.answers.push(started.elapsed());
                            }
                            drop(seen);
                            std::thread::sleep(PERIOD);
                        }
                    });
                    if let Err(e) = knocking {
                        eprintln!("tenant window: the knocker could not enter the namespace: {e}");
                    }
                })
                .context("starting the tenant window thread")?
        };
        Ok(Self {
            started,
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// What was seen from the start until now.
    pub fn so_far(&self) -> Window {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        window(&seen, Duration::ZERO, self.started.elapsed())
    }
}

fn window(seen: &Seen, from: Duration, until: Duration) -> Window {
    let answers: Vec<Duration> = seen
        .answers
        .iter()
        .copied()
        .filter(|at| *at >= from && *at <= until)
        .collect();
    let span = match (answers.first(), answers.last()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    };
    Window {
        knocks: seen.knocks,
        answered: answers.len() as u64,
        span,
        first: answers.first().copied(),
    }
}

impl Drop for TenantWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_spans_the_answers_inside_it() {
        let seen = Seen {
            knocks: 10,
            answers: vec![
                Duration::from_millis(100),
                Duration::from_millis(150),
                Duration::from_millis(900),
            ],
        };
        let early = window(&seen, Duration::ZERO, Duration::from_millis(500));
        assert_eq!(early.answered, 2);
        assert_eq!(early.span, Duration::from_millis(50));
        assert_eq!(early.first, Some(Duration::from_millis(100)));
        let none = window(
            &seen,
            Duration::from_millis(200),
            Duration::from_millis(800),
        );
        assert_eq!(none.answered, 0);
        assert_eq!(none.span, Duration::ZERO);
        assert_eq!(none.first, None);
    }
}
