//! A client of the QEMU guest agent (`qemu-ga` in the VM, a virtio serial port that QEMU
//! exposes here as a unix socket): the harness looks inside the VM through it, so the VM
//! needs no network path of its own to the harness, and the checks see the VM as it is.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use serde_json::{Value, json};

/// How long one exchange with the guest agent may take before the socket is given up.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// What a command run in the VM printed and how it ended.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The exit code (`None` when a signal ended it).
    pub code: Option<i64>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Executed {
    /// Whether it exited with 0.
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }
}

/// The guest agent's socket.
#[derive(Debug, Clone)]
pub struct GuestAgent {
    socket: PathBuf,
}

impl GuestAgent {
    /// The agent behind QEMU's `-chardev socket,path=<socket>`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// Whether the guest agent answers a `guest-sync` now.
    pub fn answers(&self) -> bool {
        self.connect().is_ok()
    }

    /// Runs `script` with `/bin/sh -c` in the VM and waits (at most `limit`) for it to end.
    pub fn sh(&self, script: &str, limit: Duration) -> Result<Executed> {
        let mut session = self.connect()?;
        let started = session.request(&json!({
            "execute": "guest-exec",
            "arguments": {"path": "/bin/sh", "arg": ["-c", script], "capture-output": true},
        }))?;
        let pid = started
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow!("guest-exec answered without a pid: {started}"))?;
        let deadline = Instant::now() + limit;
        loop {
            let status = session
                .request(&json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}))?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                return Ok(Executed {
                    code: status.get("exitcode").and_then(Value::as_i64),
                    stdout: decoded(&status, "out-data")?,
                    stderr: decoded(&status, "err-data")?,
                });
            }
            if Instant::now() > deadline {
                bail!(
                    "`{script}` in the VM did not end within {} s",
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `script` and returns its output; fails when it exits non-zero.
    pub fn sh_ok(&self, script: &str, limit: Duration) -> Result<String> {
        let run = self.sh(script, limit)?;
        if !run.succeeded() {
            bail!(
                "`{script}` in the VM exited {:?}: {}{}",
                run.code,
                run.stdout.trim(),
                run.stderr.trim()
            );
        }
        Ok(run.stdout)
    }

    fn connect(&self) -> Result<Session> {
        let stream = UnixStream::connect(&self.socket)
            .with_context(|| format!("the guest agent socket {}", self.socket.display()))?;
        stream.set_read_timeout(Some(EXCHANGE_LIMIT))?;
        stream.set_write_timeout(Some(EXCHANGE_LIMIT))?;
        let mut session = Session {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        // A sync with a fresh id skips whatever an earlier, abandoned exchange left behind.
        let id = u32::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..4].try_into()?);
        session.send(&json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
        loop {
            let answer = session.receive()?;
            if answer.get("return").and_then(Value::as_u64) == Some(u64::from(id)) {
                return Ok(session);
            }
        }
    }
}

struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Session {
    fn send(&mut self, request: &Value) -> Result<()> {
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .context("writing to the guest agent")
    }

    fn receive(&mut self) -> Result<Value> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .context("reading from the guest agent")?;
        if read == 0 {
            bail!("the guest agent closed the connection");
        }
        serde_json::from_str(line.trim_start_matches('\u{ff}').trim())
            .with_context(|| format!("the guest agent's answer {line:?}"))
    }

    fn request(&mut self, request: &Value) -> Result<Value> {
        self.send(request)?;
        let answer = self.receive()?;
        if let Some(error) = answer.get("error") {
            bail!("the guest agent refused {request}: {error}");
        }
        answer
            .get("return")
            .cloned()
            .ok_or_else(|| anyhow!("the guest agent answered {answer} to {request}"))
    }
}

fn decoded(status: &Value, field: &str) -> Result<String> {
    let Some(text) = status.get(field).and_then(Value::as_str) else {
        return Ok(String::new());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .with_context(|| format!("the guest agent's {field}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
