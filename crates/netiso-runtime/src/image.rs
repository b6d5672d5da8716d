//! Image references, registry credentials and pull progress: what `ensure_image` speaks.

use std::fmt;
use std::str::FromStr;

use netiso_config::secret::Secret;

use crate::error::RuntimeError;

/// Docker's registry for names without a registry part (`mysql:8.0`).
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference, so that a pull names one tag (never "all tags") and errors
/// can name the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    name: String,
    registry: String,
    reference: Reference,
}

/// The part after the repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Reference {
    Tag(String),
    Digest(String),
}

impl ImageReference {
    /// The repository with its registry, without tag: `10.251.0.1:5000/netiso/testdb`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry host (and port) the image comes from; `docker.io` when unnamed.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The tag or digest (`latest` when the reference had neither).
    pub fn tag_or_digest(&self) -> &str {
        match &self.reference {
            Reference::Tag(tag) | Reference::Digest(tag) => tag,
        }
    }

    /// Prefixes `registry` (Trove's `[guest_agent] container_registry`) to a name that
    /// has no registry of its own; a name that already has one is kept.
    pub fn with_default_registry(
        image: &str,
        registry: Option<&str>,
    ) -> Result<Self, RuntimeError> {
        let parsed: Self = image.parse()?;
        match registry.map(|r| r.trim().trim_end_matches('/')) {
            Some(registry) if !registry.is_empty() && !has_registry_part(image) => {
                format!("{registry}/{image}").parse()
            }
            _ => Ok(parsed),
        }
    }
}

/// Docker's rule: the first path component names a registry when it has a `.` or `:`
/// or is `localhost`.
fn has_registry_part(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
}

impl FromStr for ImageReference {
    type Err = RuntimeError;

    fn from_str(text: &str) -> Result<Self, RuntimeError> {
        let invalid = |problem| RuntimeError::InvalidImageReference {
            reference: text.to_owned(),
            problem,
        };
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace"));
        }
        let (rest, reference) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !digest.contains(':') {
                    return Err(invalid("a digest must be `algorithm:hex`"));
                }
                (rest, Reference::Digest(digest.to_owned()))
            }
            None => {
                let last_slash = text.rfind('/').map_or(0, |i| i + 1);
                match text[last_slash..].rfind(':') {
                    Some(colon) => {
                        let split = last_slash + colon;
                        let tag = &text[split + 1..];
                        if tag.is_empty() {
                            return Err(invalid("empty tag"));
                        }
                        (&text[..split], Reference::Tag(tag.to_owned()))
                    }
                    None => (text, Reference::Tag("latest".to_owned())),
                }
            }
        };
        if rest.is_empty() || rest.split('/').any(str::is_empty) {
            return Err(invalid("empty repository path component"));
        }
        let registry = if has_registry_part(rest) {
            rest.split('/').next().unwrap_or(rest).to_owned()
        } else {
            DEFAULT_REGISTRY.to_owned()
        };
        if registry != DEFAULT_REGISTRY && !rest.contains('/') {
            return Err(invalid("registry without repository"));
        }
        Ok(Self {
            name: rest.to_owned(),
            registry,
            reference,
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(tag) => write!(f, "{}:{tag}", self.name),
            Reference::Digest(digest) => write!(f, "{}@{digest}", self.name),
        }
    }
}

/// A registry login (`[guest_agent] container_registry_username/_password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The registry these credentials are for; never sent to another one.
    pub server: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: Secret,
}

impl RegistryCredentials {
    /// Whether these credentials belong to the registry of `image` (scheme and path ignored,
    /// Docker Hub's aliases folded), so a pull from elsewhere never sees them.
    pub fn applies_to(&self, image: &ImageReference) -> bool {
        normalize_registry(&self.server) == normalize_registry(image.registry())
    }
}

fn normalize_registry(server: &str) -> String {
    let host = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_REGISTRY.to_owned()
        }
        _ => host,
    }
}

/// When `ensure_image` talks to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull only when no local image has this reference (a guest restart without network).
    IfMissing,
    /// Always pull, so a re-pushed tag is picked up (Trove's behaviour).
    Always,
}

/// One progress event of a pull, as the daemon reports it per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer (or tag) the event is about.
    pub id: Option<String>,
    /// `Pulling fs layer`, `Downloading`, `Pull complete`, `Digest: …`, `Status: …`.
    pub status: String,
    /// Bytes done, when the daemon says.
    pub current: Option<u64>,
    /// Bytes in total, when the daemon says.
    pub total: Option<u64>,
}

/// What `ensure_image` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageStatus {
    /// The image was there and the policy did not ask for a pull.
    Present {
        /// Local image id (`sha256:…`).
        id: String,
    },
    /// The image was pulled.
    Pulled {
        /// Local image id (`sha256:…`).
        id: String,
    },
}

impl ImageStatus {
    /// The local image id either way.
    pub fn id(&self) -> &str {
        match self {
            Self::Present { id } | Self::Pulled { id } => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ImageReference {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn registry_tag_and_default_tag() {
        let r = parse("10.251.0.1:5000/netiso/testdb:t1");
        assert_eq!(r.name(), "10.251.0.1:5000/netiso/testdb");
        assert_eq!(r.registry(), "10.251.0.1:5000");
        assert_eq!(r.tag_or_digest(), "t1");
        assert_eq!(r.to_string(), "10.251.0.1:5000/netiso/testdb:t1");

        let r = parse("mysql");
        assert_eq!(
            (r.name(), r.registry(), r.tag_or_digest()),
            ("mysql", "docker.io", "latest")
        );
        assert_eq!(r.to_string(), "mysql:latest");

        let r = parse("localhost/db");
        assert_eq!(r.registry(), "localhost");
        let r = parse("library/mysql:8.0");
        assert_eq!((r.registry(), r.tag_or_digest()), ("docker.io", "8.0"));
        let r = parse("reg:5000/db");
        assert_eq!((r.registry(), r.tag_or_digest()), ("reg:5000", "latest"));
    }

    #[test]
    fn digests() {
        let r = parse("reg.example/db@sha256:abcd");
        assert_eq!(r.name(), "reg.example/db");
        assert_eq!(r.tag_or_digest(), "sha256:abcd");
        assert_eq!(r.to_string(), "reg.example/db@sha256:abcd");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "a b", "db:", "/db", "db//x", "reg:5000/", "x@nodigest"] {
            let err = bad.parse::<ImageReference>().expect_err(bad);
            assert!(
                err.to_string().contains("invalid image reference"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn default_registry_is_prefixed_only_when_missing() {
        let r = ImageReference::with_default_registry("trove/mysql:8.0", Some("10.0.0.5:5000/"))
            .expect("valid");
        assert_eq!(r.to_string(), "10.0.0.5:5000/trove/mysql:8.0");
        let r = ImageReference::with_default_registry("other.io/mysql", Some("10.0.0.5:5000"))
            .expect("valid");
        assert_eq!(r.to_string(), "other.io/mysql:latest");
        let r = ImageReference::with_default_registry("mysql", None).expect("valid");
        assert_eq!(r.to_string(), "mysql:latest");
    }

    #[test]
    fn credentials_stay_with_their_registry() {
        let creds = RegistryCredentials {
            server: "https://10.251.0.1:5000/v2/".into(),
            username: "u".into(),
            password: Secret::new("p"),
        };
        assert!(creds.applies_to(&parse("10.251.0.1:5000/a/b")));
        assert!(!creds.applies_to(&parse("mysql")));
        let hub = RegistryCredentials {
            server: "index.docker.io".into(),
            ..creds
        };
        assert!(hub.applies_to(&parse("mysql:8")));
        assert!(!format!("{hub:?}").contains("\"p\""));
    }
}
