//! The INI reader against the real oslo.config parser: `fixtures/oslo_iniparser_cases.json`
//! holds inputs and what oslo.config 10.7.0 produced for them
//! (regenerate with `fixtures/gen_oslo_iniparser_cases.py`), plus properties.

use std::collections::BTreeMap;
use std::path::Path;

use netiso_config::ini::{IniFile, IniSyntaxErrorKind};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    cases: BTreeMap<String, String>,
    results: BTreeMap<String, Outcome>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Ok(Vec<(String, String, String)>),
    Err((usize, String)),
}

fn oslo_message(kind: IniSyntaxErrorKind) -> &'static str {
    match kind {
        IniSyntaxErrorKind::InvalidAssignment => "No ':' or '=' found in assignment",
        IniSyntaxErrorKind::EmptyKey => "Key cannot be empty",
        IniSyntaxErrorKind::UnexpectedContinuation => "Unexpected continuation line",
        IniSyntaxErrorKind::SectionWithoutEndBracket => "Invalid section (must end with ])",
        IniSyntaxErrorKind::EmptySectionName => "Empty section name",
        IniSyntaxErrorKind::AssignmentOutsideSection => "Section must be started before assignment",
        IniSyntaxErrorKind::InvalidUtf8 => "invalid UTF-8",
    }
}

#[test]
fn every_case_matches_oslo_config() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oslo_iniparser_cases.json");
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    let cases: Cases = serde_json::from_str(&text).expect("fixture is valid JSON");
    assert!(cases.cases.len() >= 20, "fixture lost its cases");
    for (name, input) in &cases.cases {
        let expected = cases.results.get(name).expect("every case has a result");
        let parsed = IniFile::parse(Path::new("case.conf"), input);
        match (expected, parsed) {
            (Outcome::Ok(entries), Ok(file)) => {
                let ours: Vec<(String, String, String)> = file
                    .entries()
                    .iter()
                    .map(|e| (e.section.clone(), e.key.clone(), e.value.clone()))
                    .collect();
                assert_eq!(&ours, entries, "case {name}");
            }
            (Outcome::Err((line, message)), Err(error)) => {
                assert_eq!(error.line, *line, "case {name}");
                assert_eq!(oslo_message(error.kind), message, "case {name}");
            }
            (Outcome::Ok(_), Err(error)) => {
                panic!("case {name}: oslo accepts it, we reject: {error}")
            }
            (Outcome::Err(e), Ok(_)) => panic!("case {name}: oslo rejects it ({e:?}), we accept"),
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_.]{0,15}"
}

/// Values as oslo round-trips them: no surrounding whitespace, no quotes, no newline.
fn value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:=/@,;#%\\\\ .-]{0,20}".prop_map(|v| v.trim().to_owned())
}

proptest! {
    #[test]
    fn written_entries_read_back_with_lines(
        sections in proptest::collection::vec(
            ("[a-z][a-z0-9_]{0,10}", proptest::collection::vec((key(), value(), any::<bool>()), 0..5)),
            1..4,
        )
    ) {
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut line = 0;
        for (section, entries) in &sections {
            text.push_str(&format!("[{section}]\n"));
            line += 1;
            for (key, value, colon) in entries {
                let separator = if *colon { ": " } else { " = " };
                text.push_str(&format!("{key}{separator}{value}\n"));
                line += 1;
                expected.push((section.clone(), key.clone(), value.clone(), line));
            }
        }
        let file = IniFile::parse(Path::new("p.conf"), &text).expect("generated text is valid");
        let got: Vec<_> = file
            .entries()
            .iter()
            .map(|e| (e.section.clone(), e.key.clone(), e.value.clone(), e.line))
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
        let _ = IniFile::parse(Path::new("any.conf"), &text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = IniFile::parse_bytes(Path::new("any.conf"), &bytes);
    }
}
