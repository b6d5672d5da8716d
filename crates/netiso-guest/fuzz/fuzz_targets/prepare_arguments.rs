//! `prepare`'s `databases`, `users` and `overrides` (JSON from the controller, or from
//! anyone who can publish on the guest's queue without secure RPC): reading never panics,
//! and whatever is accepted builds SQL whose names stay quoted and whose printed form never
//! shows a password, and `my.cnf` lines that cannot open a new section.
//! Seeds: `fuzz/seeds/prepare_arguments` (`cargo fuzz run prepare_arguments fuzz/corpus/prepare_arguments
//! fuzz/seeds/prepare_arguments`: the first folder receives the new inputs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netiso_guest::mysql::files::overrides_from_trove;
use netiso_guest::mysql::models::{schemas_from_trove, users_from_trove};
use netiso_guest::mysql::sql;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for manager in ["mysql", "mariadb"] {
        if let Ok(schemas) = schemas_from_trove(Some(&value), manager) {
            for schema in &schemas {
                assert!(!schema.name.contains('`'), "{schema:?}");
                let statement = sql::create_database(schema);
                assert!(!statement.has_secret());
                assert!(statement.text().starts_with("CREATE DATABASE IF NOT EXISTS `"));
            }
        }
        if let Ok(users) = users_from_trove(Some(&value), manager) {
            for user in &users {
                let password = user.password.expose();
                assert!(!password.is_empty() && !password.contains(['\'', '\\']));
                for statement in sql::create_user(user) {
                    assert!(statement.has_secret());
                    let shown = statement.to_string();
                    let before = shown.strip_suffix("'***'").expect("the password comes last");
                    assert!(!before.contains("'***'"));
                    assert_eq!(format!("{before}'{password}'"), statement.text());
                }
                for grant in sql::grant_databases(user) {
                    assert!(!grant.has_secret());
                }
            }
        }
    }
    if let Ok(overrides) = overrides_from_trove(Some(&value)) {
        for (key, value) in overrides {
            assert!(!key.contains(['\n', '[', '=']) && !value.contains('\n'));
        }
    }
});
