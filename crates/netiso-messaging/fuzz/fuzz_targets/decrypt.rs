//! Any ciphertext a peer may send: decryption (lenient and strict), the replay key and
//! Trove's serializers must return errors, never panic; what strict decryption accepts,
//! lenient decryption reads the same.
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
    if let Ok(value) = key.decrypt_value_strict(&text) {
        assert_eq!(key.decrypt_value(&text).ok(), Some(value));
    }
    let _ = netiso_messaging::crypto::ciphertext_body(&text);
    let secure = Serializer::Secure(key.clone());
    let _ = secure.deserialize_entity(Value::String(text.to_string()));
    let mut entries = Map::new();
    entries.insert("context".into(), Value::String(text.to_string()));
    let _ = secure.context_replay_key(&entries);
    let _: Result<Context, _> = secure.deserialize_context(entries);
    let conductor = Serializer::Conductor {
        key,
        instance_id: "fuzz".into(),
    };
    let _ = conductor.deserialize_entity(Value::String(text.into_owned()));
});
