//! Our JSON writer against Python's `json.dumps` itself: ciphertexts are computed over this
//! text, so a single differing byte would change every encrypted value.

#![allow(clippy::unwrap_used)] // a panic is how an integration test fails

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use netiso_config::pyjson;
use serde_json::Value;

#[test]
fn pyjson_matches_python_json_dumps() {
    let documents = [
        r#"{"service_status": "healthy"}"#,
        r#""8.0.36""#,
        "null",
        "2048",
        "-9223372036854775808",
        "18446744073709551615",
        r#"[0.1, 1.5, 10.0, 1e16, 1.5e-7, 0.0001, 1e-5, 123456789.123456789, -0.0, 2.5e300, 1752000000.123456]"#,
        r#"{"z": 1, "a": [true, false, null], "m": {}, "e": []}"#,
        r#""\u00e9\u4e2d\ud83d\ude00\u007f\u0000\u001f\b\f\n\r\t\"\\/""#,
        r#"{"config_contents": "[mysqld]\nmax_connections = 200\n", "users": [{"_name": "app", "_host": "%", "_password": "s3cr3t", "_databases": [{"_name": "app", "_collate": null, "_character_set": null}], "_is_root": false}]}"#,
    ];
    let python = common::python();
    let mut child = Command::new(python)
        .arg(common::script("json_dumps.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for document in documents {
            writeln!(stdin, "{document}").unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let python_lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(python_lines.len(), documents.len());
    for (document, expected) in documents.iter().zip(python_lines) {
        let value: Value = serde_json::from_str(document).unwrap();
        assert_eq!(pyjson::dumps(&value), expected, "for {document}");
    }
}
