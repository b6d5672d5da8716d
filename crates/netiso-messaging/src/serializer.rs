//! The serializers Trove chains onto oslo.messaging: plain JSON, `SecureSerializer`
//! (controller ↔ guest) and the conductor wrapping (`ConductorGuestSerializer`).

use crate::crypto::{self, InstanceKey};
use crate::envelope::type_name;
use crate::error::{CryptoError, SerializerError};
use netiso_config::pyjson;
use serde_json::{Map, Value};

/// An opaque request context: received, kept unchanged, passed back where Trove does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context(pub Map<String, Value>);

impl Context {
    /// The fresh context the guest sends with heartbeats (no user, a new request id).
    pub fn fresh() -> Self {
        let mut map = Map::new();
        for key in [
            "user",
            "project_id",
            "system_scope",
            "project",
            "domain",
            "user_domain",
            "project_domain",
        ] {
            map.insert(key.into(), Value::Null);
        }
        for key in ["is_admin", "read_only", "show_deleted"] {
            map.insert(key.into(), Value::Bool(false));
        }
        map.insert("auth_token".into(), Value::Null);
        map.insert(
            "request_id".into(),
            Value::from(format!("req-{}", uuid::Uuid::new_v4().hyphenated())),
        );
        for key in ["global_request_id", "resource_uuid"] {
            map.insert(key.into(), Value::Null);
        }
        map.insert("roles".into(), Value::Array(Vec::new()));
        map.insert("user_identity".into(), Value::from("- - - - -"));
        map.insert("is_admin_project".into(), Value::Bool(true));
        for key in ["limit", "marker", "service_catalog"] {
            map.insert(key.into(), Value::Null);
        }
        Self(map)
    }

    /// A context entry, e.g. `trove_notification`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

/// How arguments, results and the context are put on the wire.
#[derive(Debug, Clone)]
pub enum Serializer {
    /// No instance key: plain JSON values, context spread into `_context_<key>`.
    Plain,
    /// Trove's `SecureSerializer`: every top-level value and the whole context encrypted.
    Secure(InstanceKey),
    /// Guest → conductor: encrypted values wrapped with the instance id.
    Conductor {
        /// The instance key.
        key: InstanceKey,
        /// The guest's instance id (`csz-instance-id`).
        instance_id: String,
    },
}

impl Serializer {
    /// Serializes one top-level argument or a call result.
    pub fn serialize_entity(&self, value: &Value) -> Value {
        match self {
            Self::Plain => value.clone(),
            Self::Secure(key) => Value::String(key.encrypt_value(value)),
            Self::Conductor { key, instance_id } => {
                let mut wrapper = Map::new();
                wrapper.insert("entity".into(), Value::String(key.encrypt_value(value)));
                wrapper.insert("csz-instance-id".into(), Value::from(instance_id.clone()));
                Value::String(pyjson::dumps(&Value::Object(wrapper)))
            }
        }
    }

    /// Deserializes one argument or result.
    ///
    /// With a key the value must decrypt (strictly: well-formed padding, JSON inside).
    /// Trove's `SecureSerializer` keeps a value that does not decrypt as it was sent, so a
    /// sender without the key could pass plaintext arguments next to a replayed context;
    /// here such a value is refused. Trove encrypts every argument, `null` included, so no
    /// Trove sender is affected.
    pub fn deserialize_entity(&self, value: Value) -> Result<Value, SerializerError> {
        match self {
            Self::Plain => Ok(value),
            Self::Secure(key) => match &value {
                Value::String(wire) => Ok(key.decrypt_value_strict(wire)?),
                other => Err(CryptoError::NotAString(type_name(other)).into()),
            },
            Self::Conductor { key, .. } => Self::unwrap_conductor_entity(key, &value),
        }
    }

    fn unwrap_conductor_entity(key: &InstanceKey, value: &Value) -> Result<Value, SerializerError> {
        let text = value
            .as_str()
            .ok_or_else(|| SerializerError::BadConductorEntity(type_name(value).into()))?;
        let wrapper: Value = serde_json::from_str(text)
            .map_err(|err| SerializerError::BadConductorEntity(err.to_string()))?;
        let entity = wrapper
            .get("entity")
            .and_then(Value::as_str)
            .ok_or_else(|| SerializerError::BadConductorEntity("no \"entity\" string".into()))?;
        Ok(key.decrypt_value_strict(entity)?)
    }

    /// Produces the `_context_*` entries (keys without the prefix) for a request.
    pub fn serialize_context(&self, context: &Context) -> Map<String, Value> {
        match self {
            Self::Plain => context.0.clone(),
            Self::Secure(key) => {
                let mut map = Map::new();
                map.insert(
                    "context".into(),
                    Value::String(key.encrypt_value(&Value::Object(context.0.clone()))),
                );
                map
            }
            Self::Conductor { key, instance_id } => {
                let mut map = Map::new();
                map.insert(
                    "context".into(),
                    Value::String(key.encrypt_value(&Value::Object(context.0.clone()))),
                );
                map.insert("csz-instance-id".into(), Value::from(instance_id.clone()));
                map
            }
        }
    }

    /// Rebuilds the context from a request's `_context_*` entries.
    ///
    /// With a key the encrypted `context` entry is required (Trove fails with KeyError without
    /// it) and must decrypt strictly, like every argument.
    pub fn deserialize_context(
        &self,
        entries: Map<String, Value>,
    ) -> Result<Context, SerializerError> {
        let key = match self {
            Self::Plain => return Ok(Context(entries)),
            Self::Secure(key) | Self::Conductor { key, .. } => key,
        };
        let wire = match entries.get("context") {
            Some(Value::String(wire)) => wire,
            Some(other) => {
                return Err(CryptoError::NotAString(type_name(other)).into());
            }
            None => return Err(SerializerError::MissingContext("_context_context")),
        };
        match key.decrypt_value_strict(wire)? {
            Value::Object(map) => Ok(Context(map)),
            _ => Err(SerializerError::ContextNotAnObject),
        }
    }

    /// What identifies a request's encrypted context beyond its clear `_unique_id`: the
    /// context's ciphertext blocks after the IV (see [`crypto::ciphertext_body`]). `None`
    /// without a key or without a readable context.
    ///
    /// Every request Trove sends encrypts its context with a fresh random IV, so two distinct
    /// requests never share these bytes, while a replay that only changed `_unique_id` (it
    /// travels in clear) or the IV still does.
    pub fn context_replay_key(&self, entries: &Map<String, Value>) -> Option<Vec<u8>> {
        match self {
            Self::Plain => None,
            Self::Secure(_) | Self::Conductor { .. } => match entries.get("context") {
                Some(Value::String(wire)) => crypto::ciphertext_body(wire).ok(),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> InstanceKey {
        InstanceKey::new("Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq").unwrap()
    }

    #[test]
    fn secure_entities_round_trip_and_refuse_plaintext() {
        let serializer = Serializer::Secure(key());
        let wire = serializer.serialize_entity(&json!(null));
        assert!(wire.is_string(), "null must be encrypted too");
        assert_eq!(serializer.deserialize_entity(wire).unwrap(), json!(null));
        assert!(matches!(
            serializer.deserialize_entity(json!("plain")),
            Err(SerializerError::Crypto(_))
        ));
        assert_eq!(
            serializer.deserialize_entity(json!(5)).unwrap_err(),
            SerializerError::Crypto(CryptoError::NotAString("a number"))
        );
        let reference = json!("yw+Fcz+MS06pbVIsEyL/UuxEpL02HB4DMMZ6zk8h+bM=");
        assert_eq!(
            serializer.deserialize_entity(reference).unwrap(),
            json!(2048)
        );
        let other = InstanceKey::new("Bm2yN8q4ZtP0xW7cK3vR9aL5sD1fH6jE").unwrap();
        let foreign = Value::String(other.encrypt_value(&json!("s3cr3t")));
        let err = serializer.deserialize_entity(foreign).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn context_replay_key_survives_a_new_iv_and_differs_per_encryption() {
        let serializer = Serializer::Secure(key());
        let first = serializer.serialize_context(&Context::fresh());
        let second = serializer.serialize_context(&Context::fresh());
        let key_of = |entries: &Map<String, Value>| serializer.context_replay_key(entries);
        assert!(key_of(&first).is_some());
        assert_ne!(key_of(&first), key_of(&second));
        let mut tampered = first.clone();
        let wire = first["context"].as_str().unwrap();
        let flipped = if wire.starts_with('A') { 'B' } else { 'A' };
        tampered.insert("context".into(), json!(format!("{flipped}{}", &wire[1..])));
        assert_eq!(key_of(&tampered), key_of(&first));
        assert_eq!(Serializer::Plain.context_replay_key(&first), None);
    }

    #[test]
    fn secure_context_is_one_encrypted_entry_and_required() {
        let serializer = Serializer::Secure(key());
        let context = Context::fresh();
        let entries = serializer.serialize_context(&context);
        assert_eq!(entries.len(), 1);
        assert!(entries["context"].is_string());
        assert_eq!(serializer.deserialize_context(entries).unwrap(), context);
        assert_eq!(
            serializer.deserialize_context(Map::new()).unwrap_err(),
            SerializerError::MissingContext("_context_context")
        );
        let mut garbage = Map::new();
        garbage.insert("context".into(), json!("AAAA"));
        assert!(matches!(
            serializer.deserialize_context(garbage),
            Err(SerializerError::Crypto(_))
        ));
    }

    #[test]
    fn conductor_wrapping_matches_reference_shape() {
        let serializer = Serializer::Conductor {
            key: key(),
            instance_id: "8a0c1b2e-5f3d-4c6b-9a71-0d2e3f4a5b6c".into(),
        };
        let wire = serializer.serialize_entity(&json!({"service_status": "healthy"}));
        let text = wire.as_str().unwrap();
        assert!(text.starts_with(r#"{"entity": ""#), "{text}");
        assert!(text.ends_with(r#"", "csz-instance-id": "8a0c1b2e-5f3d-4c6b-9a71-0d2e3f4a5b6c"}"#));
        assert_eq!(
            serializer.deserialize_entity(wire).unwrap(),
            json!({"service_status": "healthy"})
        );
        let entries = serializer.serialize_context(&Context::fresh());
        let keys: Vec<_> = entries.keys().cloned().collect();
        assert_eq!(keys, ["context", "csz-instance-id"]);
    }

    #[test]
    fn plain_context_is_spread() {
        let serializer = Serializer::Plain;
        let context = Context::fresh();
        let entries = serializer.serialize_context(&context);
        assert!(entries.contains_key("request_id"));
        assert_eq!(serializer.deserialize_context(entries).unwrap(), context);
    }
}
