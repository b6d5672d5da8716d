//! The TLS files an operator configures (`ssl_ca_file`, `ssl_cert_file`, `ssl_key_file`), with
//! any contents: loading them must give a transport or an error naming the option, never a
//! panic, and never quote a key file's bytes.
//! Input: the three files' contents, separated by `0xFF` bytes (missing parts are empty files).
//! Seeds: `fuzz/seeds/tls_files` (public test certificates only; no key is committed).
#![no_main]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use netiso_config::{RabbitTlsOptions, SslVersion};
use netiso_messaging::{
    BrokerConfig, BrokerHost, RabbitOptions, TlsError, Transport, TransportError,
};

/// What an error about `ssl_key_file` may say: fixed words, never the file's bytes.
const KEY_REASONS: [&str; 2] = [
    "no usable private key in the file",
    "the private key does not go with the certificate in",
];

static RUN: AtomicU64 = AtomicU64::new(0);

fn write(name: &str, contents: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "netiso-fuzz-tls-{}-{}-{name}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).expect("temporary file");
    path
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xFF);
    let (ca, cert, key) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let paths = [write("ca", ca), write("cert", cert), write("key", key)];
    let mut options = RabbitOptions::default();
    options.tls = RabbitTlsOptions {
        ssl: true,
        ssl_version: SslVersion::Negotiate,
        ssl_ca_file: Some(paths[0].clone()),
        ssl_cert_file: Some(paths[1].clone()),
        ssl_key_file: Some(paths[2].clone()),
    };
    let config = BrokerConfig {
        hosts: vec![BrokerHost {
            hostname: "127.0.0.1".into(),
            port: 1,
            username: "guest".into(),
            password: "guest".into(),
        }],
        virtual_host: "/".into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Started inside the runtime (the supervisor is a task); dropping the runtime ends it.
    let started = runtime.block_on(async { Transport::start(config, options) });
    match started {
        Err(TransportError::Tls(TlsError::Invalid {
            option: "ssl_key_file",
            reason,
            ..
        })) => assert!(
            KEY_REASONS.iter().any(|fixed| reason.starts_with(fixed)),
            "a key file error says something other than its fixed reasons: {reason}"
        ),
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains("[oslo_messaging_rabbit] ssl_"), "{text}");
        }
        Ok(_) => {}
    }
    drop(runtime);
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
});
