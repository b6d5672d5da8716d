//! HTTP/1.1 over a unix socket, as dockerd's legacy plugin client speaks it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use crate::driver::Driver;
use crate::protocol::{ErrorResponse, decode_request};
use crate::write_deadline::WriteDeadline;

/// Where dockerd discovers the plugin by the name `docker-hostnic`.
pub const DEFAULT_SOCKET_PATH: &str = "/run/docker/plugins/docker-hostnic.sock";
/// Content type of every answer (Docker ignores it; this is the current plugin API version).
pub const PLUGIN_CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";
/// Largest accepted request body; real requests are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Socket permissions: root and the socket's group only (dockerd runs as root).
pub const SOCKET_MODE: u32 = 0o660;
/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bounds that keep slow or stuck clients from holding the plugin: dockerd sends each request
/// at once, so anything slower is a broken or hostile client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeLimits {
    /// Time to receive a request's headers, counted from when the server starts waiting for
    /// them (an idle keep-alive connection is closed after it too).
    pub header_read_timeout: Duration,
    /// Time to receive a request's body once its headers are in; over it the answer is 408
    /// and the connection is closed.
    pub body_read_timeout: Duration,
    /// Time an answer may wait for the client to read it; over it the connection is closed
    /// (a client that sends requests and never reads the answers would otherwise hold its
    /// slot once the socket's buffer is full).
    pub write_timeout: Duration,
    /// Connections served at once; further clients wait in the socket's backlog.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Failures to set up or run the listener.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Creating the socket failed.
    #[error("cannot create the plugin socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process answers on the socket.
    #[error(
        "another process is already serving on {path}; stop it (e.g. `systemctl stop docker-hostnic`) or choose another --socket"
    )]
    AlreadyServing {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    #[error("{path} exists and is not a socket; remove it or choose another --socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// systemd passed unusable sockets.
    #[error("systemd socket activation: {0}")]
    SocketActivation(String),
    /// The listener could not be handed to the async runtime.
    #[error("cannot register the plugin socket with the runtime: {0}")]
    Register(#[source] io::Error),
}

/// The listening socket, and the path to remove on exit when this process created it.
#[derive(Debug)]
pub struct PluginSocket {
    listener: StdUnixListener,
    owned_path: Option<PathBuf>,
}

impl PluginSocket {
    /// Creates the socket at `path` with mode 0660.
    ///
    /// The socket is bound under a temporary name, its mode set, then renamed into place, so
    /// dockerd never sees it with looser permissions. A stale socket (nobody answering) is
    /// replaced; a live one or a non-socket file is an error.
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        let bind_error = |source| ServerError::Bind {
            path: path.to_owned(),
            source,
        };
        let (Some(parent), Some(file_name)) = (path.parent(), path.file_name()) else {
            return Err(bind_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file path",
            )));
        };
        let directory = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::create_dir_all(directory).map_err(bind_error)?;
        match path.symlink_metadata() {
            Ok(metadata) if metadata.file_type().is_socket() => {
                match StdUnixStream::connect(path) {
                    Ok(_) => {
                        return Err(ServerError::AlreadyServing {
                            path: path.to_owned(),
                        });
                    }
                    Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::info!(path = %path.display(), "replacing a stale plugin socket");
                        std::fs::remove_file(path).map_err(bind_error)?;
                    }
                    Err(err) => return Err(bind_error(err)),
                }
            }
            Ok(_) => {
                return Err(ServerError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(bind_error(err)),
        }
        let temporary = directory.join(format!(
            ".{}.{}.tmp",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&temporary);
        let listener = StdUnixListener::bind(&temporary).map_err(bind_error)?;
        let placed =
            std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(SOCKET_MODE))
                .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(err) = placed {
            let _ = std::fs::remove_file(&temporary);
            return Err(bind_error(err));
        }
        Ok(Self {
            listener,
            owned_path: Some(path.to_owned()),
        })
    }

    /// The socket systemd passed (`LISTEN_FDS=1`, `LISTEN_PID` = this process, fd 3), if any.
    ///
    /// Call it before starting threads: it clears the `LISTEN_*` variables so that children do
    /// not inherit them. The socket file belongs to systemd and is not removed on exit.
    pub fn from_systemd() -> Result<Option<Self>, ServerError> {
        let Ok(fds) = std::env::var("LISTEN_FDS") else {
            return Ok(None);
        };
        let ours = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
        if !ours {
            return Ok(None);
        }
        if fds.trim() != "1" {
            return Err(ServerError::SocketActivation(format!(
                "LISTEN_FDS={fds}, but docker-hostnic takes exactly one socket; use a single ListenStream= in the .socket unit"
            )));
        }
        let mut passed = listenfd::ListenFd::from_env();
        match passed.take_unix_listener(0) {
            Ok(Some(listener)) => Ok(Some(Self {
                listener,
                owned_path: None,
            })),
            Ok(None) => Err(ServerError::SocketActivation(
                "fd 3 was not passed".to_owned(),
            )),
            Err(err) => Err(ServerError::SocketActivation(format!(
                "fd 3 is not a listening unix stream socket ({err}); set ListenStream= to a path"
            ))),
        }
    }

    /// Where the socket lives, for logs (`None` if unknown).
    pub fn path(&self) -> Option<PathBuf> {
        self.owned_path.clone().or_else(|| {
            let address = self.listener.local_addr().ok()?;
            address.as_pathname().map(Path::to_owned)
        })
    }

    fn remove_owned_path(&mut self) {
        if let Some(path) = self.owned_path.take()
            && let Err(err) = std::fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), %err, "cannot remove the plugin socket");
        }
    }
}

impl Drop for PluginSocket {
    fn drop(&mut self) {
        self.remove_owned_path();
    }
}

/// Serves plugin calls until `shutdown` completes, then stops accepting, removes the socket it
/// created and waits up to [`SHUTDOWN_GRACE`] for requests in flight. Uses the default
/// [`ServeLimits`].
pub async fn serve(
    socket: PluginSocket,
    driver: Arc<Driver>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    serve_with_limits(socket, driver, ServeLimits::default(), shutdown).await
}

/// [`serve`] with explicit limits (tests use short ones).
pub async fn serve_with_limits(
    mut socket: PluginSocket,
    driver: Arc<Driver>,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    socket
        .listener
        .set_nonblocking(true)
        .map_err(ServerError::Register)?;
    let cloned = socket.listener.try_clone().map_err(ServerError::Register)?;
    let listener = tokio::net::UnixListener::from_std(cloned).map_err(ServerError::Register)?;
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first, then accept: over the limit, clients wait in the kernel's backlog
        // instead of being refused.
        let accepted = tokio::select! {
            accepted = accept_with_slot(&listener, &slots) => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, slot)) => {
                let driver = driver.clone();
                let body_timeout = limits.body_read_timeout;
                let service = hyper::service::service_fn(move |request| {
                    let driver = driver.clone();
                    async move {
                        Ok::<_, Infallible>(respond_within(&driver, request, body_timeout).await)
                    }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .serve_connection(
                        TokioIo::new(WriteDeadline::new(stream, limits.write_timeout)),
                        service,
                    );
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = watched.await {
                        tracing::debug!(%err, "plugin connection ended with an error");
                    }
                    drop(slot);
                });
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%err, "cannot accept a plugin connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    socket.remove_owned_path();
    drop(socket);
    tracing::info!("stopped accepting plugin calls; waiting for requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still in flight at shutdown were abandoned");
    }
    Ok(())
}

/// Waits for a connection slot, then for a client.
async fn accept_with_slot(
    listener: &tokio::net::UnixListener,
    slots: &Arc<Semaphore>,
) -> io::Result<(tokio::net::UnixStream, OwnedSemaphorePermit)> {
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("the connection limit was closed"))?;
    let (stream, _) = listener.accept().await?;
    Ok((stream, slot))
}

/// Answers one HTTP request and logs it (endpoint, NetworkID, status, duration), with the
/// default body timeout.
pub async fn respond<B>(
    driver: &Arc<Driver>,
    request: hyper::Request<B>,
) -> hyper::Response<Full<Bytes>>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    respond_within(driver, request, ServeLimits::default().body_read_timeout).await
}

/// [`respond`], giving up on a body not received within `body_timeout` (408, and the
/// connection is closed: the rest of the body would be read as the next request).
pub async fn respond_within<B>(
    driver: &Arc<Driver>,
    request: hyper::Request<B>,
    body_timeout: Duration,
) -> hyper::Response<Full<Bytes>>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let (status, body, network_id) = answer(driver, request, body_timeout).await;
    let network_id = network_id.unwrap_or_else(|| "-".to_owned());
    let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let response_body = match &body {
        Ok(json) => {
            tracing::info!(endpoint = %path, network_id = %network_id, status = status.as_u16(), duration_us, "plugin call");
            json.clone()
        }
        Err(message) => {
            tracing::warn!(endpoint = %path, network_id = %network_id, status = status.as_u16(), duration_us, error = %message, "plugin call failed");
            serde_json::to_vec(&ErrorResponse {
                err: message.clone(),
            })
            .unwrap_or_default()
        }
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(response_body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PLUGIN_CONTENT_TYPE));
    if status == StatusCode::REQUEST_TIMEOUT {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

type Answer = (StatusCode, Result<Vec<u8>, String>, Option<String>);

async fn answer<B>(
    driver: &Arc<Driver>,
    request: hyper::Request<B>,
    body_timeout: Duration,
) -> Answer
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let fail = |status: StatusCode, message: String| (status, Err(message), None);
    // Trove's activation probe (`curl --unix-socket ... /Plugin.Activate`) uses GET.
    if request.method() != Method::POST && request.method() != Method::GET {
        return fail(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} is not supported; plugin calls are POST requests",
                request.method()
            ),
        );
    }
    let path = request.uri().path().to_owned();
    let collected = tokio::time::timeout(
        body_timeout,
        Limited::new(request.into_body(), MAX_BODY_BYTES).collect(),
    )
    .await;
    let body = match collected {
        Err(_elapsed) => {
            return fail(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not received within {} s",
                    body_timeout.as_secs_f64()
                ),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
            );
        }
        Ok(Err(err)) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {err}"),
            );
        }
    };
    let request = match decode_request(&path, &body) {
        Ok(request) => request,
        Err(err) => return fail(status_code(err.http_status()), err.to_string()),
    };
    let network_id = request.network_id().map(ToString::to_string);
    let driver = driver.clone();
    let outcome = tokio::task::spawn_blocking(move || driver.handle(request)).await;
    let result = match outcome {
        Ok(Ok(response)) => match serde_json::to_vec(&response) {
            Ok(json) => (StatusCode::OK, Ok(json)),
            Err(err) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Err(format!("cannot encode the answer: {err}")),
            ),
        },
        Ok(Err(err)) => (status_code(err.http_status()), Err(err.to_string())),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Err(format!("the handler failed: {err}")),
        ),
    };
    (result.0, result.1, network_id)
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A future that resolves on SIGTERM or SIGINT, naming the signal.
///
/// The handlers are installed when this function returns (not on first poll), so a signal sent
/// right after start-up is not lost. Must be called within a tokio runtime.
pub fn termination_signal() -> io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}
