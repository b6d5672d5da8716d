//! Our encryption and serializers against Trove 26.0.0's own Python code (installed from PyPI
//! by `cargo xtask provision`), over random payloads: whatever one side encrypts, the other
//! decrypts to the same value, and the JSON text under the ciphertext is byte-identical.
//!
//! The peer (`tests/python/trove_crypto_peer.py`) calls Trove's `crypto_utils`,
//! `SecureSerializer` and `ConductorGuestSerializer` directly; the test vectors of the unit
//! tests only pin the algorithm as documented, this pins it to the code Trove runs.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use netiso_config::pyjson;
use netiso_messaging::{Context, InstanceKey, Serializer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{Map, Number, Value, json};

/// Random cases per property: each is one or two lines to the Python process.
const CASES: u32 = 300;

/// One long-lived Python process running Trove's code.
struct TrovePeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl TrovePeer {
    fn start() -> Self {
        let python = common::python();
        let check = Command::new(&python)
            .args([
                "-W",
                "ignore",
                "-c",
                "import trove.common.crypto_utils, trove.common.rpc.secure_serializer, \
                 trove.common.rpc.conductor_guest_serializer, importlib.metadata as m; \
                 assert m.version('trove') == '26.0.0', m.version('trove')",
            ])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "Trove 26.0.0's serializers do not import in the Python venv ({}). Run `cargo xtask provision`",
            String::from_utf8_lossy(&check.stderr).trim()
        );
        let mut child = Command::new(&python)
            .arg(common::script("trove_crypto_peer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one request; Trove's exceptions come back as `{"error": ...}` and fail the case.
    fn ask(&mut self, request: Value) -> Result<Value, TestCaseError> {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line).unwrap();
        assert!(read > 0, "the Trove peer exited");
        let answer: Value = serde_json::from_str(&line).unwrap();
        if let Some(error) = answer.get("error") {
            return Err(TestCaseError::fail(format!(
                "Trove's code raised {error} for {request}"
            )));
        }
        Ok(answer)
    }
}

impl Drop for TrovePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One peer for every property of this file (tests run on several threads).
static PEER: Mutex<Option<TrovePeer>> = Mutex::new(None);

fn with_peer<T>(run: impl FnOnce(&mut TrovePeer) -> T) -> T {
    let mut guard = PEER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    run(guard.get_or_insert_with(TrovePeer::start))
}

/// Keys as Trove generates them: 32 ASCII letters and digits.
fn instance_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{32}"
}

/// Any JSON text Python's `json` writes and reads back unchanged: finite floats, integers over
/// the 64-bit range, strings over all of Unicode (control characters and astral planes
/// included), nested arrays and objects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Contexts are JSON objects (Trove's `TroveContext.to_dict()`).
fn context() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(("[a-z_]{1,16}", json_value()), 0..8)
        .prop_map(|pairs| pairs.into_iter().collect())
}

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Our `SecureSerializer` output decrypts in Trove's to the same value, over the same text.
    #[test]
    fn trove_decrypts_what_we_encrypt(key in instance_key(), value in json_value()) {
        let wire = Serializer::Secure(InstanceKey::new(&key).unwrap()).serialize_entity(&value);
        let answer = with_peer(|peer| {
            peer.ask(json!({"op": "decrypt_entity", "key": key, "wire": wire}))
        })?;
        prop_assert_eq!(&answer["value"], &value);
        prop_assert_eq!(answer["plaintext"].as_str().unwrap(), pyjson::dumps(&value));
    }

    /// Trove's `SecureSerializer` output decrypts in ours, leniently and strictly, to the same
    /// value, and the text Trove encrypted is the text we would have encrypted.
    #[test]
    fn we_decrypt_what_trove_encrypts(key in instance_key(), value in json_value()) {
        let answer = with_peer(|peer| {
            peer.ask(json!({"op": "encrypt_entity", "key": key, "value": value}))
        })?;
        let wire = answer["wire"].as_str().unwrap();
        let key = InstanceKey::new(&key).unwrap();
        prop_assert_eq!(&key.decrypt_value(wire).unwrap(), &value);
        // Received requests are decrypted strictly (padding checked): Trove's must pass.
        prop_assert_eq!(&key.decrypt_value_strict(wire).unwrap(), &value);
        prop_assert_eq!(answer["plaintext"].as_str().unwrap(), pyjson::dumps(&value));
    }

    /// Contexts both ways: ours read by Trove's `deserialize_context`, Trove's read by ours.
    #[test]
    fn contexts_cross_both_ways(key in instance_key(), context in context()) {
        let serializer = Serializer::Secure(InstanceKey::new(&key).unwrap());
        let ours = serializer.serialize_context(&Context(context.clone()));
        let answer = with_peer(|peer| {
            peer.ask(json!({"op": "decrypt_context", "key": key, "entries": ours}))
        })?;
        prop_assert_eq!(&answer["context"], &Value::Object(context.clone()));

        let answer = with_peer(|peer| {
            peer.ask(json!({"op": "encrypt_context", "key": key, "context": context}))
        })?;
        let entries = answer["entries"].as_object().unwrap().clone();
        let read = serializer.deserialize_context(entries).unwrap();
        prop_assert_eq!(read.0, context);
    }

    /// What our guest sends the conductor has exactly the shape Trove's
    /// `ConductorGuestSerializer` gives it (same JSON text around the ciphertext, same keys),
    /// and the ciphertext decrypts with Trove's code.
    #[test]
    fn conductor_messages_match_troves_guest_serializer(
        key in instance_key(),
        guest_id in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        value in json_value(),
        context in context(),
    ) {
        let serializer = Serializer::Conductor {
            key: InstanceKey::new(&key).unwrap(),
            instance_id: guest_id.clone(),
        };
        let text = serializer.serialize_entity(&value);
        let answer = with_peer(|peer| {
            peer.ask(json!({
                "op": "conductor_entity", "key": key, "guest_id": guest_id,
                "value": value, "text": text,
            }))
        })?;
        prop_assert_eq!(answer["trove_text"].as_str().unwrap(), text.as_str().unwrap());
        prop_assert_eq!(&answer["value"], &value);

        let entries = serializer.serialize_context(&Context(context.clone()));
        let answer = with_peer(|peer| {
            peer.ask(json!({
                "op": "conductor_context", "key": key, "guest_id": guest_id,
                "context": context, "entries": entries,
            }))
        })?;
        let our_keys: Vec<&String> = entries.keys().collect();
        prop_assert_eq!(&answer["trove_keys"], &json!(our_keys));
        prop_assert_eq!(&answer["trove_guest_id"], &json!(guest_id));
        prop_assert_eq!(&answer["context"], &Value::Object(context));
    }
}
