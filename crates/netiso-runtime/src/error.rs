//! The one error type of every runtime adapter.

/// A boxed error from the runtime's client library, kept as the `source` of [`RuntimeError`]
/// so that callers see the daemon's own words without depending on the client's types.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Why a runtime operation failed; each variant names what it was acting on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The daemon cannot be reached (socket missing, refused, or not the runtime expected).
    #[error("cannot reach the container runtime at {endpoint}: {source}")]
    Unreachable {
        /// Socket or URL tried.
        endpoint: String,
        /// What the client reported.
        #[source]
        source: BackendError,
    },
    /// An image reference that cannot be parsed.
    #[error("invalid image reference `{reference}`: {problem}")]
    InvalidImageReference {
        /// The text given.
        reference: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The registry answered that the image (or its tag) does not exist.
    #[error("image `{image}` not found in registry {registry}: {message}")]
    ImageNotFound {
        /// The full reference asked for.
        image: String,
        /// The registry it was looked up in.
        registry: String,
        /// The daemon's message.
        message: String,
    },
    /// A pull that failed for another reason (registry down, auth refused, disk full).
    #[error("pulling image `{image}` from registry {registry} failed: {message}")]
    PullFailed {
        /// The full reference asked for.
        image: String,
        /// The registry it was pulled from.
        registry: String,
        /// The daemon's message.
        message: String,
    },
    /// A container spec the runtime would reject or misread.
    #[error("invalid container spec for `{container}`: {problem}")]
    InvalidSpec {
        /// The container name of the spec.
        container: String,
        /// What is wrong.
        problem: String,
    },
    /// No container of that name or id.
    #[error("container `{0}` does not exist")]
    ContainerNotFound(String),
    /// A container of that name exists already.
    #[error("a container named `{0}` already exists")]
    ContainerExists(String),
    /// The network driver is not installed or its plugin is not answering.
    #[error(
        "cannot create network `{network}`: network driver `{driver}` is not available \
         (is its plugin running and its socket in /run/docker/plugins?): {message}"
    )]
    NetworkDriverUnavailable {
        /// The network being created.
        network: String,
        /// The driver asked for.
        driver: String,
        /// The daemon's message.
        message: String,
    },
    /// A network of that name exists with other settings, and containers still use it.
    #[error(
        "network `{network}` exists with other settings ({}) and is used by container(s) {}; \
         remove them or the network first",
        differences.join("; "),
        containers.join(", ")
    )]
    NetworkMismatchInUse {
        /// The network.
        network: String,
        /// Each setting that differs, as `what: existing X, wanted Y`.
        differences: Vec<String>,
        /// Names (or ids) of containers attached to it.
        containers: Vec<String>,
    },
    /// The container did not become healthy in time.
    #[error("container `{container}` not healthy after {waited:?} (last state: {last_state})")]
    HealthTimeout {
        /// The container.
        container: String,
        /// How long we waited.
        waited: std::time::Duration,
        /// Its state and health at the deadline.
        last_state: String,
    },
    /// Any other daemon error, with the operation and its target.
    #[error("{operation} `{target}` failed: {source}")]
    Backend {
        /// What we asked, e.g. `start container`.
        operation: &'static str,
        /// The container, image or network name.
        target: String,
        /// What the daemon or client reported.
        #[source]
        source: BackendError,
    },
}
