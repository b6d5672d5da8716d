//! `TransportUrl` against the real oslo.messaging parser: `fixtures/transport_url_cases.json`
//! holds URLs and what oslo.messaging 18.3.1's `TransportURL.parse` made of them
//! (regenerate with `fixtures/gen_transport_url_cases.py`).

use std::collections::BTreeMap;
use std::path::Path;

use netiso_config::TransportUrl;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

/// oslo's `TransportHost`: hostname, port, username, password.
type OsloHost = (Option<String>, Option<i64>, Option<String>, Option<String>);

#[derive(Deserialize)]
struct Case {
    url: String,
    error: Option<String>,
    scheme: Option<String>,
    virtual_host: Option<String>,
    #[serde(default)]
    hosts: Vec<OsloHost>,
    #[serde(default)]
    query: BTreeMap<String, String>,
}

/// URLs oslo accepts and we reject on purpose: a host entry without host name, a port
/// above 65535, text between `]` and `:port`.
const STRICTER: [&str; 3] = [
    "rabbit://u:p@/",
    "rabbit://h:99999/",
    "rabbit://[::1]x:5672/",
];

#[test]
fn every_case_matches_oslo_messaging() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transport_url_cases.json");
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    let cases: Cases = serde_json::from_str(&text).expect("fixture is valid JSON");
    assert!(cases.cases.len() >= 25, "fixture lost its cases");
    for case in &cases.cases {
        let ours = case.url.parse::<TransportUrl>();
        if STRICTER.contains(&case.url.as_str()) {
            assert!(
                ours.is_err(),
                "{}: we accept what we meant to reject",
                case.url
            );
            continue;
        }
        if let Some(error) = &case.error {
            assert!(
                ours.is_err(),
                "{}: oslo rejects it ({error}), we accept",
                case.url
            );
            continue;
        }
        let url = ours.unwrap_or_else(|e| panic!("{}: oslo accepts it, we reject: {e}", case.url));
        assert_eq!(Some(&url.scheme), case.scheme.as_ref(), "{}", case.url);
        assert_eq!(url.virtual_host, case.virtual_host, "{}", case.url);
        let hosts: Vec<_> = url
            .hosts
            .iter()
            .map(|h| {
                (
                    Some(h.hostname.clone()),
                    h.port.map(i64::from),
                    h.username.clone(),
                    h.password.as_ref().map(|p| p.expose().to_owned()),
                )
            })
            .collect();
        assert_eq!(hosts, case.hosts, "{}", case.url);
        let query: BTreeMap<String, String> = url.query.iter().cloned().collect();
        assert_eq!(query, case.query, "{}", case.url);
    }
}
