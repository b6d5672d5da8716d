//! Any ciphertext a peer may send: decryption and Trove's serializers must return errors or
//! the tolerated raw value, never panic.
//! Seeds: `fuzz/seeds/decrypt` (reference ciphertexts under the fuzz key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_messaging::{Context, InstanceKey, Serializer};
use serde_json::{Map, Value};

const KEY: &str = "Qm9kZ3kxMjM0NTY3ODlhYmNkZWZnaGlq";

fuzz_target!(|data: &[u8]| {
    let Ok(key) = InstanceKey::new(KEY) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    if let Ok(value) = key.decrypt_value(&text) {
        let wire = key.encrypt_value(&value);
        assert_eq!(key.decrypt_value(&wire).ok(), Some(value));
    }
    let secure = Serializer::Secure(key.clone());
    let _ = secure.deserialize_entity(Value::String(text.to_string()));
    let mut entries = Map::new();
    entries.insert("context".into(), Value::String(text.to_string()));
    let _: Result<Context, _> = secure.deserialize_context(entries);
    let conductor = Serializer::Conductor {
        key,
        instance_id: "fuzz".into(),
    };
    let _ = conductor.deserialize_entity(Value::String(text.into_owned()));
});
