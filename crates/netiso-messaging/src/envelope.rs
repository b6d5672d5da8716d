//! The oslo.messaging 2.0 envelope (`{"oslo.version", "oslo.message"}`) and the request, reply
//! and failure messages it carries, with the key order Python produces.

use netiso_config::pyjson;
use serde_json::{Map, Value};

use crate::error::EnvelopeError;

/// The envelope version this peer writes and accepts (major 2, minor 0).
pub const ENVELOPE_VERSION: &str = "2.0";
/// Prefix of context keys in a request.
pub const CONTEXT_PREFIX: &str = "_context_";

/// Wraps a message object into the double-encoded 2.0 envelope body.
pub fn wrap(message: &Map<String, Value>) -> Vec<u8> {
    let inner = pyjson::dumps(&Value::Object(message.clone()));
    let mut outer = Map::new();
    outer.insert("oslo.version".into(), Value::from(ENVELOPE_VERSION));
    outer.insert("oslo.message".into(), Value::String(inner));
    pyjson::dumps(&Value::Object(outer)).into_bytes()
}

/// Reads a body: an enveloped 2.0 message, or a bare (1.0) message object.
pub fn unwrap(body: &[u8]) -> Result<Map<String, Value>, EnvelopeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|err| EnvelopeError::NotJson(err.to_string()))?;
    let Value::Object(mut outer) = value else {
        return Err(EnvelopeError::NotAnObject);
    };
    if !(outer.contains_key("oslo.version") && outer.contains_key("oslo.message")) {
        return Ok(outer);
    }
    let version = match outer.get("oslo.version") {
        Some(Value::String(version)) => version.clone(),
        Some(other) => return Err(EnvelopeError::UnsupportedVersion(type_name(other).into())),
        None => return Err(EnvelopeError::UnsupportedVersion("nothing".into())),
    };
    if !envelope_version_compatible(&version) {
        return Err(EnvelopeError::UnsupportedVersion(printable(&version)));
    }
    let Some(Value::String(inner)) = outer.remove("oslo.message") else {
        return Err(EnvelopeError::BadInnerMessage("not a string".into()));
    };
    match serde_json::from_str(&inner) {
        Ok(Value::Object(message)) => Ok(message),
        Ok(_) => Err(EnvelopeError::BadInnerMessage("not a JSON object".into())),
        Err(err) => Err(EnvelopeError::BadInnerMessage(err.to_string())),
    }
}

fn envelope_version_compatible(version: &str) -> bool {
    let mut parts = version.split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().map_or(Some(0), |p| p.parse::<u32>().ok());
    let rest_ok = parts.all(|p| p.parse::<u32>().is_ok());
    major == Some(2) && minor == Some(0) && rest_ok
}

/// An RPC request (call or cast) as carried inside the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Endpoint method name.
    pub method: String,
    /// Keyword arguments, each already serialized.
    pub args: Map<String, Value>,
    /// Endpoint namespace; Trove never sets one.
    pub namespace: Option<String>,
    /// Requested API version; absent means "1.0".
    pub version: Option<String>,
    /// Present on calls only: correlation id of the reply.
    pub msg_id: Option<String>,
    /// Present on calls only: the queue to reply to.
    pub reply_q: Option<String>,
    /// Call-monitor interval; Trove sends null.
    pub timeout: Option<Value>,
    /// Duplicate-detection id.
    pub unique_id: Option<String>,
    /// Serialized context entries, keys without the `_context_` prefix.
    pub context: Map<String, Value>,
}

impl Request {
    /// True for a call (a reply is expected).
    pub fn is_call(&self) -> bool {
        self.msg_id.is_some()
    }

    /// Builds the message object with oslo's key order.
    pub fn to_message(&self) -> Map<String, Value> {
        let mut msg = Map::new();
        msg.insert("method".into(), Value::from(self.method.clone()));
        msg.insert("args".into(), Value::Object(self.args.clone()));
        if let Some(namespace) = &self.namespace {
            msg.insert("namespace".into(), Value::from(namespace.clone()));
        }
        if let Some(version) = &self.version {
            msg.insert("version".into(), Value::from(version.clone()));
        }
        if let Some(msg_id) = &self.msg_id {
            msg.insert("_msg_id".into(), Value::from(msg_id.clone()));
            let reply_q = self.reply_q.clone().map_or(Value::Null, Value::from);
            msg.insert("_reply_q".into(), reply_q);
            msg.insert(
                "_timeout".into(),
                self.timeout.clone().unwrap_or(Value::Null),
            );
        }
        if let Some(unique_id) = &self.unique_id {
            msg.insert("_unique_id".into(), Value::from(unique_id.clone()));
        }
        for (key, value) in &self.context {
            msg.insert(format!("{CONTEXT_PREFIX}{key}"), value.clone());
        }
        msg
    }

    /// Reads a request message; unknown keys are ignored like oslo does.
    pub fn from_message(mut msg: Map<String, Value>) -> Result<Self, EnvelopeError> {
        let method = match msg.remove("method") {
            Some(Value::String(method)) => method,
            other => return Err(bad_field("method", "a string", other.as_ref())),
        };
        let args = match msg.remove("args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(args)) => args,
            Some(other) => return Err(bad_field("args", "an object", Some(&other))),
        };
        let namespace = optional_string(&mut msg, "namespace")?;
        let version = optional_string(&mut msg, "version")?;
        let msg_id = optional_string(&mut msg, "_msg_id")?;
        let reply_q = optional_string(&mut msg, "_reply_q")?;
        if msg_id.is_some() && reply_q.is_none() {
            return Err(bad_field("_reply_q", "a string on a call", None));
        }
        let timeout = msg.remove("_timeout").filter(|v| !v.is_null());
        let unique_id = optional_string(&mut msg, "_unique_id")?;
        let context = msg
            .into_iter()
            .filter_map(|(key, value)| {
                key.strip_prefix(CONTEXT_PREFIX)
                    .map(|name| (name.to_owned(), value))
            })
            .collect();
        Ok(Self {
            method,
            args,
            namespace,
            version,
            msg_id,
            reply_q,
            timeout,
            unique_id,
            context,
        })
    }
}

/// A reply to a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Serialized result; null with a failure.
    pub result: Value,
    /// JSON text of a [`RemoteFailure`], never encrypted.
    pub failure: Option<String>,
    /// Always true for Trove (no call-monitor keep-alives).
    pub ending: bool,
    /// The request's `_msg_id`.
    pub msg_id: String,
    /// A fresh id, so that the caller's duplicate filter accepts it.
    pub unique_id: String,
}

impl Reply {
    /// Builds the message object with oslo's key order.
    pub fn to_message(&self) -> Map<String, Value> {
        let mut msg = Map::new();
        msg.insert("result".into(), self.result.clone());
        msg.insert(
            "failure".into(),
            self.failure.clone().map_or(Value::Null, Value::String),
        );
        msg.insert("ending".into(), Value::Bool(self.ending));
        msg.insert("_msg_id".into(), Value::from(self.msg_id.clone()));
        msg.insert("_unique_id".into(), Value::from(self.unique_id.clone()));
        msg
    }

    /// Reads a reply message.
    pub fn from_message(mut msg: Map<String, Value>) -> Result<Self, EnvelopeError> {
        let msg_id = match msg.remove("_msg_id") {
            Some(Value::String(id)) => id,
            other => return Err(bad_field("_msg_id", "a string", other.as_ref())),
        };
        let failure = optional_string(&mut msg, "failure")?;
        let ending = !matches!(msg.get("ending"), Some(Value::Bool(false)));
        let unique_id = optional_string(&mut msg, "_unique_id")?.unwrap_or_default();
        Ok(Self {
            result: msg.remove("result").unwrap_or(Value::Null),
            failure,
            ending,
            msg_id,
            unique_id,
        })
    }
}

/// The exception description oslo puts in a reply's `failure`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFailure {
    /// Exception class name, e.g. `NoSuchMethod`.
    pub class: String,
    /// Exception module, e.g. `oslo_messaging.rpc.dispatcher`.
    pub module: String,
    /// Human-readable message shown by Trove's API.
    pub message: String,
    /// Traceback lines (ours: a single descriptive line).
    pub tb: Vec<String>,
    /// Positional constructor arguments.
    pub args: Vec<Value>,
    /// Keyword constructor arguments.
    pub kwargs: Map<String, Value>,
}

impl RemoteFailure {
    /// A failure with the message as its only constructor argument.
    pub fn new(class: &str, module: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            class: class.to_owned(),
            module: module.to_owned(),
            tb: vec![format!("{class}: {message}\n")],
            args: vec![Value::from(message.clone())],
            kwargs: Map::new(),
            message,
        }
    }

    /// The JSON text placed in `failure` (key order as oslo writes it).
    pub fn to_json(&self) -> String {
        let mut map = Map::new();
        map.insert("class".into(), Value::from(self.class.clone()));
        map.insert("module".into(), Value::from(self.module.clone()));
        map.insert("message".into(), Value::from(self.message.clone()));
        map.insert(
            "tb".into(),
            Value::Array(self.tb.iter().cloned().map(Value::from).collect()),
        );
        map.insert("args".into(), Value::Array(self.args.clone()));
        map.insert("kwargs".into(), Value::Object(self.kwargs.clone()));
        pyjson::dumps(&Value::Object(map))
    }

    /// Parses a `failure` text; missing parts become empty.
    pub fn from_json(text: &str) -> Result<Self, EnvelopeError> {
        let Value::Object(mut map) =
            serde_json::from_str(text).map_err(|err| EnvelopeError::BadField {
                field: "failure",
                reason: err.to_string(),
            })?
        else {
            return Err(bad_field("failure", "a JSON object", None));
        };
        let mut text_of = |key: &str| match map.remove(key) {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let class = text_of("class");
        let module = text_of("module");
        let message = text_of("message");
        let tb = match map.remove("tb") {
            Some(Value::Array(lines)) => lines
                .into_iter()
                .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let args = match map.remove("args") {
            Some(Value::Array(args)) => args,
            _ => Vec::new(),
        };
        let kwargs = match map.remove("kwargs") {
            Some(Value::Object(kwargs)) => kwargs,
            _ => Map::new(),
        };
        Ok(Self {
            class,
            module,
            message,
            tb,
            args,
            kwargs,
        })
    }
}

fn optional_string(
    msg: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, EnvelopeError> {
    match msg.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad_field(field, "a string or null", Some(&other))),
    }
}

fn bad_field(field: &'static str, expected: &str, found: Option<&Value>) -> EnvelopeError {
    let found = found.map_or_else(|| "nothing".to_owned(), |v| type_name(v).to_owned());
    EnvelopeError::BadField {
        field,
        reason: format!("expected {expected}, found {found}"),
    }
}

/// Longest outside-supplied name (method, argument) echoed in an error or a log line.
pub const NAME_ECHO_MAX: usize = 64;

/// A name taken from a request, safe to echo: control characters escaped (no forged log
/// lines) and cut to [`NAME_ECHO_MAX`] characters. Names are not secret (they travel in
/// clear); only their size and shape are limited.
pub fn printable(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(NAME_ECHO_MAX)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().count() > NAME_ECHO_MAX {
        out.push('…');
    }
    out
}

/// The JSON type of a value, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn call_request_is_written_like_oslo() {
        let request = Request {
            method: "get_filesystem_stats".into(),
            args: object(json!({"fs_path": "xMUG"})),
            namespace: None,
            version: Some("1.0".into()),
            msg_id: Some("e6ed".into()),
            reply_q: Some("reply_5e00".into()),
            timeout: None,
            unique_id: Some("8bfb".into()),
            context: object(json!({"context": "rEor"})),
        };
        let body = wrap(&request.to_message());
        let expected = r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"get_filesystem_stats\", \"args\": {\"fs_path\": \"xMUG\"}, \"version\": \"1.0\", \"_msg_id\": \"e6ed\", \"_reply_q\": \"reply_5e00\", \"_timeout\": null, \"_unique_id\": \"8bfb\", \"_context_context\": \"rEor\"}"}"#;
        assert_eq!(String::from_utf8(body.clone()).unwrap(), expected);
        let parsed = Request::from_message(unwrap(&body).unwrap()).unwrap();
        assert_eq!(parsed, request);
        assert!(parsed.is_call());
    }

    #[test]
    fn failure_reply_matches_reference_layout() {
        let mut failure = RemoteFailure::new("ValueError", "builtins", "boom: cannot list users");
        failure.tb = vec![
            "Traceback (most recent call last):\n".into(),
            "...".into(),
            "ValueError: boom: cannot list users\n".into(),
        ];
        let reply = Reply {
            result: Value::Null,
            failure: Some(failure.to_json()),
            ending: true,
            msg_id: "95c8be0d51d6429c993549eb679cef70".into(),
            unique_id: "657d09812185444daecf0819c1f76f34".into(),
        };
        let body = String::from_utf8(wrap(&reply.to_message())).unwrap();
        let expected = r#"{"oslo.version": "2.0", "oslo.message": "{\"result\": null, \"failure\": \"{\\\"class\\\": \\\"ValueError\\\", \\\"module\\\": \\\"builtins\\\", \\\"message\\\": \\\"boom: cannot list users\\\", \\\"tb\\\": [\\\"Traceback (most recent call last):\\\\n\\\", \\\"...\\\", \\\"ValueError: boom: cannot list users\\\\n\\\"], \\\"args\\\": [\\\"boom: cannot list users\\\"], \\\"kwargs\\\": {}}\", \"ending\": true, \"_msg_id\": \"95c8be0d51d6429c993549eb679cef70\", \"_unique_id\": \"657d09812185444daecf0819c1f76f34\"}"}"#;
        assert_eq!(body, expected);
        let parsed = Reply::from_message(unwrap(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(parsed, reply);
        let back = RemoteFailure::from_json(parsed.failure.as_deref().unwrap()).unwrap();
        assert_eq!(back, failure);
    }

    #[test]
    fn echoed_names_are_escaped_and_bounded() {
        assert_eq!(printable("rpc_ping"), "rpc_ping");
        assert_eq!(printable("a\nfake line"), "a\\nfake line");
        let long = "m".repeat(500);
        assert_eq!(printable(&long).chars().count(), NAME_ECHO_MAX + 1);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let depth = 100_000;
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        match unwrap(body.as_bytes()) {
            Err(EnvelopeError::NotJson(reason)) => {
                assert!(reason.contains("recursion limit"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // serde_json's recursion limit of 128 allows 127 nested containers: the object and
        // 126 arrays inside parse, one more is refused.
        let ok = format!("{{\"a\": {}{}}}", "[".repeat(126), "]".repeat(126));
        assert!(unwrap(ok.as_bytes()).is_ok());
        let too_deep = format!("{{\"a\": {}{}}}", "[".repeat(127), "]".repeat(127));
        assert!(matches!(
            unwrap(too_deep.as_bytes()),
            Err(EnvelopeError::NotJson(_))
        ));
        // The inner, double-encoded message has the same limit.
        let inner = format!("{{\"method\": {}{}}}", "[".repeat(200), "]".repeat(200));
        let outer = json!({"oslo.version": "2.0", "oslo.message": inner}).to_string();
        assert!(matches!(
            unwrap(outer.as_bytes()),
            Err(EnvelopeError::BadInnerMessage(_))
        ));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(matches!(
            unwrap(b"{\"method\": \"\xff\xfe\"}"),
            Err(EnvelopeError::NotJson(_))
        ));
    }

    #[test]
    fn bare_messages_are_accepted() {
        let msg = unwrap(br#"{"method": "rpc_ping", "args": {}}"#).unwrap();
        let request = Request::from_message(msg).unwrap();
        assert_eq!(request.method, "rpc_ping");
        assert!(!request.is_call());
        assert_eq!(request.version, None);
    }

    #[test]
    fn bad_bodies_get_clear_errors() {
        assert!(matches!(
            unwrap(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(unwrap(b"[1]"), Err(EnvelopeError::NotAnObject));
        assert_eq!(
            unwrap(br#"{"oslo.version": "3.0", "oslo.message": "{}"}"#),
            Err(EnvelopeError::UnsupportedVersion("3.0".into()))
        );
        assert_eq!(
            unwrap(br#"{"oslo.version": "2.1", "oslo.message": "{}"}"#),
            Err(EnvelopeError::UnsupportedVersion("2.1".into()))
        );
        assert!(matches!(
            unwrap(br#"{"oslo.version": "2.0", "oslo.message": "{"}"#),
            Err(EnvelopeError::BadInnerMessage(_))
        ));
        let no_method = unwrap(br#"{"args": {}}"#).unwrap();
        assert!(matches!(
            Request::from_message(no_method),
            Err(EnvelopeError::BadField {
                field: "method",
                ..
            })
        ));
        let call_without_reply_q = unwrap(br#"{"method": "m", "_msg_id": "x"}"#).unwrap();
        assert!(matches!(
            Request::from_message(call_without_reply_q),
            Err(EnvelopeError::BadField {
                field: "_reply_q",
                ..
            })
        ));
    }
}
