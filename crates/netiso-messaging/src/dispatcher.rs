//! Dispatch by method name to async handlers, with oslo's version and namespace checks and
//! its failure classes, so Trove's client shows the same messages as with the Python guest.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::envelope::{RemoteFailure, printable};
use crate::error::DispatcherError;
use crate::serializer::Context;

/// Module reported for oslo's own dispatcher errors.
pub const OSLO_DISPATCHER_MODULE: &str = "oslo_messaging.rpc.dispatcher";
/// Module reported for our handler errors: outside Trove's `allowed_remote_exmods`, so the
/// API shows the plain message (`RemoteError`) instead of rebuilding an exception.
pub const GUEST_MODULE: &str = "trove_guest";

/// A handler's failure, sent back to the caller as a readable remote exception and logged.
/// Its message must name what failed, never an argument value (arguments carry passwords).
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerError {
    /// Exception class shown to the caller.
    pub class: String,
    /// Human-readable message.
    pub message: String,
}

impl HandlerError {
    /// A generic guest failure (`GuestError`).
    pub fn new(message: impl Into<String>) -> Self {
        Self::with_class("GuestError", message)
    }

    /// A failure with a specific class name.
    pub fn with_class(class: &str, message: impl Into<String>) -> Self {
        Self {
            class: class.to_owned(),
            message: message.into(),
        }
    }

    /// Wrong, missing or unexpected arguments (Python raises `TypeError`).
    pub fn bad_arguments(message: impl Into<String>) -> Self {
        Self::with_class("TypeError", message)
    }

    pub(crate) fn into_failure(self) -> RemoteFailure {
        RemoteFailure::new(&self.class, GUEST_MODULE, self.message)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for HandlerError {}

/// Keyword arguments of one request, taken by name with clear errors.
///
/// The errors name the method, the argument and the JSON type received, never a value:
/// arguments carry passwords (`prepare`'s `users` and `root_password`), and errors travel
/// back in failure replies and into logs.
#[derive(Debug)]
pub struct Args {
    method: String,
    values: Map<String, Value>,
}

impl Args {
    /// Wraps the deserialized arguments of `method`.
    pub fn new(method: &str, values: Map<String, Value>) -> Self {
        Self {
            method: method.to_owned(),
            values,
        }
    }

    /// A required argument.
    pub fn take<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, HandlerError> {
        let value = self.values.remove(name).ok_or_else(|| {
            HandlerError::bad_arguments(format!(
                "{}() missing 1 required positional argument: '{name}'",
                self.method
            ))
        })?;
        self.convert(name, value)
    }

    /// An optional argument; absent and null give `None`.
    pub fn take_opt<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, HandlerError> {
        match self.values.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => self.convert(name, value).map(Some),
        }
    }

    /// Fails if arguments remain that the handler did not take.
    pub fn finish(self) -> Result<(), HandlerError> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => Err(HandlerError::bad_arguments(format!(
                "{}() got an unexpected keyword argument '{}'",
                self.method,
                printable(name)
            ))),
        }
    }

    /// All remaining arguments (free keyword arguments).
    pub fn into_map(self) -> Map<String, Value> {
        self.values
    }

    fn convert<T: DeserializeOwned>(&self, name: &str, value: Value) -> Result<T, HandlerError> {
        let received = python_type(&value);
        // serde's message quotes the offending value ("invalid type: string \"...\""), so
        // it is dropped: only the argument's name and the type received are reported.
        serde_json::from_value(value).map_err(|_| {
            HandlerError::bad_arguments(format!(
                "{}() argument '{name}' has an unusable value of type {received}",
                self.method
            ))
        })
    }
}

/// The Python type name of a JSON value, as a Python `TypeError` would name it.
pub fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// An endpoint method.
pub trait Handler: Send + Sync {
    /// Runs the method with the request's context and arguments.
    fn call(&self, context: Context, args: Args) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Context, Args) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    fn call(&self, context: Context, args: Args) -> HandlerFuture {
        Box::pin(self(context, args))
    }
}

/// A parsed `major.minor[.revision]` RPC version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    major: u32,
    minor: u32,
    revision: u32,
}

impl Version {
    /// Parses a version string; `None` when it is not numeric dotted.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let revision = parts.next().unwrap_or(Some(0))?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            revision,
        })
    }

    /// oslo's `version_is_compatible(self, requested)`.
    pub fn accepts(&self, requested: &Self) -> bool {
        requested.major == self.major
            && (requested.minor < self.minor
                || (requested.minor == self.minor && requested.revision <= self.revision))
    }
}

/// Methods of one endpoint, the version it implements and its namespace.
pub struct Dispatcher {
    version: Version,
    namespace: Option<String>,
    handlers: HashMap<String, Arc<dyn Handler>>,
}

/// What to run for a request, or the failure to send.
pub(crate) enum Resolution {
    Run(Arc<dyn Handler>),
    Refuse(RemoteFailure),
}

impl Dispatcher {
    /// An endpoint implementing `version` (e.g. `1.3`) in the default (null) namespace.
    pub fn new(version: &str) -> Result<Self, DispatcherError> {
        let version = Version::parse(version).ok_or_else(|| DispatcherError::BadVersion {
            version: version.to_owned(),
        })?;
        Ok(Self {
            version,
            namespace: None,
            handlers: HashMap::new(),
        })
    }

    /// Registers a method; names starting with `_` are private and never dispatched.
    pub fn register(&mut self, method: &str, handler: impl Handler + 'static) -> &mut Self {
        self.handlers.insert(method.to_owned(), Arc::new(handler));
        self
    }

    /// Finds the handler or the failure oslo would send.
    pub(crate) fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
        namespace: Option<&str>,
    ) -> Resolution {
        let requested = printable(version.unwrap_or("1.0"));
        let method = printable(name);
        let compatible = namespace == self.namespace.as_deref()
            && Version::parse(version.unwrap_or("1.0")).is_some_and(|v| self.version.accepts(&v));
        if !compatible {
            let mut failure = RemoteFailure::new(
                "UnsupportedVersion",
                OSLO_DISPATCHER_MODULE,
                format!(
                    "Endpoint does not support RPC version {requested}. Attempted method: {method}"
                ),
            );
            failure.args = vec![Value::from(requested)];
            failure.kwargs.insert("method".into(), Value::from(method));
            return Resolution::Refuse(failure);
        }
        match self.handlers.get(name) {
            Some(handler) if !name.starts_with('_') => Resolution::Run(Arc::clone(handler)),
            _ => Resolution::Refuse(RemoteFailure::new(
                "NoSuchMethod",
                OSLO_DISPATCHER_MODULE,
                format!("Endpoint does not support RPC method {method}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dispatcher() -> Dispatcher {
        let mut d = Dispatcher::new("1.3").unwrap();
        d.register("rpc_ping", |_ctx: Context, args: Args| async move {
            args.finish()?;
            Ok(json!(true))
        });
        d.register("_private", |_ctx: Context, _args: Args| async move {
            Ok(Value::Null)
        });
        d
    }

    fn refused(resolution: Resolution) -> RemoteFailure {
        match resolution {
            Resolution::Refuse(failure) => failure,
            Resolution::Run(_) => panic!("expected a refusal"),
        }
    }

    #[test]
    fn versions_follow_oslo_rules() {
        let d = dispatcher();
        for ok in [None, Some("1.0"), Some("1.3"), Some("1.3.0"), Some("1")] {
            assert!(
                matches!(d.resolve("rpc_ping", ok, None), Resolution::Run(_)),
                "{ok:?}"
            );
        }
        for bad in ["1.4", "2.0", "1.3.1", "x", "0.9", "1.3.0.0"] {
            let failure = refused(d.resolve("rpc_ping", Some(bad), None));
            assert_eq!(failure.class, "UnsupportedVersion");
            assert_eq!(
                failure.message,
                format!("Endpoint does not support RPC version {bad}. Attempted method: rpc_ping")
            );
        }
        let failure = refused(d.resolve("rpc_ping", None, Some("other")));
        assert_eq!(failure.class, "UnsupportedVersion");
    }

    #[test]
    fn endpoint_versions_must_be_numeric() {
        for bad in ["", "1.x", "v1.3", "1.2.3.4"] {
            let Err(err) = Dispatcher::new(bad) else {
                panic!("{bad:?} is not a version");
            };
            assert_eq!(
                err,
                DispatcherError::BadVersion {
                    version: bad.into()
                }
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(Dispatcher::new("2.0.1").is_ok());
    }

    #[test]
    fn unknown_and_private_methods_are_no_such_method() {
        let d = dispatcher();
        for method in ["nope", "_private"] {
            let failure = refused(d.resolve(method, Some("1.0"), None));
            assert_eq!(failure.class, "NoSuchMethod");
            assert_eq!(failure.module, OSLO_DISPATCHER_MODULE);
            assert_eq!(
                failure.message,
                format!("Endpoint does not support RPC method {method}")
            );
        }
    }

    #[test]
    fn args_report_missing_unexpected_and_invalid() {
        let mut args = Args::new(
            "mount_volume",
            json!({"device_path": 5, "x": 1, "password": "s3cr3t-value"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let err = args.take::<String>("mount_point").unwrap_err();
        assert_eq!(
            err.message,
            "mount_volume() missing 1 required positional argument: 'mount_point'"
        );
        let err = args.take::<String>("device_path").unwrap_err();
        assert_eq!(
            err.message,
            "mount_volume() argument 'device_path' has an unusable value of type int"
        );
        let err = args.take::<u32>("password").unwrap_err();
        assert_eq!(err.class, "TypeError");
        assert_eq!(
            err.message,
            "mount_volume() argument 'password' has an unusable value of type str"
        );
        assert_eq!(args.take_opt::<u32>("absent").unwrap(), None);
        let err = args.finish().unwrap_err();
        assert_eq!(err.class, "TypeError");
        assert_eq!(
            err.message,
            "mount_volume() got an unexpected keyword argument 'x'"
        );
    }
}
