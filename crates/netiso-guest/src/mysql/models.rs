//! The databases and users of a `prepare` request, read from Trove's serialized models
//! (`{"_name": …, "_character_set": …}`) and validated with the rules of Trove's
//! `MySQLSchema` and `MySQLUser`, so that a bad name is refused before anything is created.

use std::net::IpAddr;

use ipnet::IpNet;
use netiso_config::Secret;
use serde_json::{Map, Value};

/// Trove's default character set and collation for a database that names neither.
pub const DEFAULT_CHARACTER_SET: &str = "utf8mb3";
/// See [`DEFAULT_CHARACTER_SET`].
pub const DEFAULT_COLLATION: &str = "utf8mb3_general_ci";
/// Longest database name (MySQL's limit, Trove's `_max_schema_name_length`).
const MAX_SCHEMA_NAME: usize = 64;
/// Longest user name Trove accepts (`_max_user_name_length`).
const MAX_USER_NAME: usize = 16;
/// Users Trove keeps for itself (`[mysql] ignore_users`).
const RESERVED_USERS: &[&str] = &["os_admin", "root"];

/// Why a database or user of the request is refused. Never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// An item that is not a JSON object, or a field of the wrong type.
    #[error("{what} is malformed: {problem}")]
    Malformed {
        /// Which item (`databases[1]`, `users[0]`).
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// A database name Trove's schema rules refuse.
    #[error("Cannot create database: '{name}' is not a valid schema name ({rule})")]
    SchemaName {
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A database name on Trove's reserved list (`ignore_dbs`).
    #[error("Cannot create database: Database name \"{0}\" is on the reserved list")]
    ReservedSchema(String),
    /// A character set or collation name that is not a plain identifier.
    #[error("database '{database}': '{value}' is not a valid {what}")]
    Charset {
        /// The database.
        database: String,
        /// `character set` or `collation`.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A user name Trove's user rules refuse.
    #[error("Cannot create user: '{name}' is not a valid user name ({rule})")]
    UserName {
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A user name on Trove's reserved list (`ignore_users`).
    #[error("Cannot create user: User name \"{0}\" is on the reserved list")]
    ReservedUser(String),
    /// A host that is neither `%` nor an IP address or network.
    #[error(
        "Cannot create user '{user}': '{host}' is not a valid hostname (an IP address or network, `%` allowed as a wildcard)"
    )]
    Host {
        /// The user.
        user: String,
        /// The host.
        host: String,
    },
    /// A configuration option that cannot be written to `my.cnf` or set on the server.
    #[error("configuration option `{name}`: {problem}")]
    Override {
        /// The option.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A user without a password, or with one MySQL's quoting rules refuse.
    #[error("Cannot create user '{user}': {problem}")]
    Password {
        /// The user.
        user: String,
        /// What is wrong (never the password itself).
        problem: &'static str,
    },
}

/// A database to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// The database name.
    pub name: String,
    /// `CHARACTER SET`; `None` lets the server pick the collation's.
    pub character_set: Option<String>,
    /// `COLLATE`; `None` lets the server pick the character set's default.
    pub collation: Option<String>,
}

/// A user to create, with `ALL PRIVILEGES` on each of its databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The host part (`%` when the request has none).
    pub host: String,
    /// The password (required).
    pub password: Secret,
    /// Databases the user is granted.
    pub databases: Vec<String>,
}

/// Trove's reserved database names (`ignore_dbs`) for a datastore manager.
fn reserved_schemas(manager: &str) -> &'static [&'static str] {
    match manager {
        "mysql" => &["mysql", "information_schema", "performance_schema", "sys"],
        _ => &["mysql", "information_schema", "performance_schema"],
    }
}

fn field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, InvalidInput> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(InvalidInput::Malformed {
            what: what.to_owned(),
            problem: format!("`{key}` is {}, not a string", kind(other)),
        }),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, InvalidInput> {
    value.as_object().ok_or_else(|| InvalidInput::Malformed {
        what: what.to_owned(),
        problem: format!("it is {}, not an object", kind(value)),
    })
}

/// Trove's schema name rule: letters, digits, `_` and `-`, with one run of spaces, `?`, `#`
/// or `@` allowed inside (`^[A-Za-z0-9_-]+[\s?#@]*[A-Za-z0-9_-]+$`, no character Python
/// would escape), at most 64 characters.
pub fn check_schema_name(name: &str) -> Result<(), InvalidInput> {
    let refuse = |rule| {
        Err(InvalidInput::SchemaName {
            name: name.to_owned(),
            rule,
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.chars().count() > MAX_SCHEMA_NAME {
        return refuse("longer than 64 characters");
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let inner = |c: char| matches!(c, ' ' | '?' | '#' | '@');
    let head = name.find(|c: char| !word(c)).unwrap_or(name.len());
    let rest = &name[head..];
    let middle = rest.find(|c: char| !inner(c)).unwrap_or(rest.len());
    let tail = &rest[middle..];
    let valid = head > 0
        && if middle == 0 {
            rest.is_empty() && head >= 2
        } else {
            !tail.is_empty() && tail.chars().all(word)
        };
    if valid {
        Ok(())
    } else {
        refuse(
            "letters, digits, `_` and `-`, at least two, with spaces, `?`, `#` or `@` only between them",
        )
    }
}

/// Trove's rule for user names and passwords: not empty, no leading or trailing space, none
/// of `'` `"` `;` `` ` `` `,` `/` `\`, and no control character.
fn plain_string(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err("leading or trailing whitespace");
    }
    if value.contains(['\'', '"', ';', '`', ',', '/', '\\']) {
        return Err("one of ' \" ; ` , / \\");
    }
    if value.chars().any(char::is_control) {
        return Err("a control character");
    }
    Ok(())
}

/// Trove's host rule with `hostname_require_valid_ip` (its default): `%`, or an IP address
/// or network once each `%` is read as a `1`.
fn valid_host(host: &str) -> bool {
    if host == "%" {
        return true;
    }
    let probe = host.replace('%', "1");
    if probe.parse::<IpAddr>().is_ok() || probe.parse::<IpNet>().is_ok() {
        return true;
    }
    // An IPv4 network written with a netmask (`10.0.0.0/255.255.255.0`).
    match probe.split_once('/') {
        Some((address, mask)) => {
            address.parse::<std::net::Ipv4Addr>().is_ok()
                && mask
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|m| ipnet::ipv4_mask_to_prefix(m).is_ok())
        }
        None => false,
    }
}

fn identifier_like(value: &str) -> bool {
    !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Schema {
    /// One database of `prepare`'s `databases` (or of a user's `_databases`).
    pub fn from_trove(value: &Value, what: &str, manager: &str) -> Result<Self, InvalidInput> {
        let object = object(value, what)?;
        let name = field(object, "_name", what)?.unwrap_or_default().to_owned();
        check_schema_name(&name)?;
        if reserved_schemas(manager).contains(&name.as_str()) {
            return Err(InvalidInput::ReservedSchema(name));
        }
        let charset = |key: &str, what_value: &'static str| match field(object, key, what)?
            .filter(|v| !v.is_empty())
        {
            Some(value) if identifier_like(value) => Ok(Some(value.to_owned())),
            Some(value) => Err(InvalidInput::Charset {
                database: name.clone(),
                what: what_value,
                value: value.to_owned(),
            }),
            None => Ok(None),
        };
        let character_set = charset("_character_set", "character set")?;
        let collation = charset("_collate", "collation")?;
        Ok(match (character_set, collation) {
            (None, None) => Self {
                name,
                character_set: Some(DEFAULT_CHARACTER_SET.to_owned()),
                collation: Some(DEFAULT_COLLATION.to_owned()),
            },
            (character_set, collation) => Self {
                name,
                character_set,
                collation,
            },
        })
    }
}

impl User {
    /// One user of `prepare`'s `users`.
    pub fn from_trove(value: &Value, what: &str, manager: &str) -> Result<Self, InvalidInput> {
        let object = object(value, what)?;
        let name = field(object, "_name", what)?.unwrap_or_default().to_owned();
        if name.chars().count() > MAX_USER_NAME {
            return Err(InvalidInput::UserName {
                name,
                rule: "longer than 16 characters",
            });
        }
        plain_string(&name).map_err(|rule| InvalidInput::UserName {
            name: name.clone(),
            rule,
        })?;
        if RESERVED_USERS.contains(&name.as_str()) {
            return Err(InvalidInput::ReservedUser(name));
        }
        let host = field(object, "_host", what)?
            .filter(|h| !h.is_empty())
            .unwrap_or("%")
            .to_owned();
        if !valid_host(&host) {
            return Err(InvalidInput::Host { user: name, host });
        }
        let password = match field(object, "_password", what) {
            Ok(Some(password)) if !password.is_empty() => password,
            Ok(_) => {
                return Err(InvalidInput::Password {
                    user: name,
                    problem: "the user has no password",
                });
            }
            Err(_) => {
                return Err(InvalidInput::Password {
                    user: name,
                    problem: "the password is not a string",
                });
            }
        };
        plain_string(password).map_err(|_| InvalidInput::Password {
            user: name.clone(),
            problem: "the password has leading or trailing whitespace, a control character, \
                      or one of ' \" ; ` , / \\",
        })?;
        let databases = match object.get("_databases") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    Schema::from_trove(item, &format!("{what}._databases[{i}]"), manager)
                        .map(|schema| schema.name)
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(InvalidInput::Malformed {
                    what: what.to_owned(),
                    problem: format!("`_databases` is {}, not a list", kind(other)),
                });
            }
        };
        Ok(Self {
            name,
            host,
            password: Secret::new(password),
            databases,
        })
    }
}

/// `prepare`'s `databases` argument (`null` is none).
pub fn schemas_from_trove(
    value: Option<&Value>,
    manager: &str,
) -> Result<Vec<Schema>, InvalidInput> {
    list(value, "databases")?
        .iter()
        .enumerate()
        .map(|(i, item)| Schema::from_trove(item, &format!("databases[{i}]"), manager))
        .collect()
}

/// `prepare`'s `users` argument (`null` is none).
pub fn users_from_trove(value: Option<&Value>, manager: &str) -> Result<Vec<User>, InvalidInput> {
    list(value, "users")?
        .iter()
        .enumerate()
        .map(|(i, item)| User::from_trove(item, &format!("users[{i}]"), manager))
        .collect()
}

fn list<'a>(value: Option<&'a Value>, what: &str) -> Result<&'a [Value], InvalidInput> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(InvalidInput::Malformed {
            what: what.to_owned(),
            problem: format!("it is {}, not a list", kind(other)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_names_follow_trove_s_rule() {
        for good in [
            "app",
            "my_db-1",
            "ab",
            "a b",
            "a?#@b",
            "x".repeat(64).as_str(),
        ] {
            assert_eq!(check_schema_name(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "a",
            " ab",
            "ab ",
            "a b c",
            "a.b",
            "a;b",
            "a`b",
            "a\tb",
            "dé",
            "x".repeat(65).as_str(),
        ] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn databases_default_to_trove_s_charset_and_refuse_reserved_names() {
        let schemas = schemas_from_trove(
            Some(&json!([
                {"_name": "app", "_character_set": "utf8mb4", "_collate": "utf8mb4_general_ci"},
                {"_name": "plain", "_character_set": null, "_collate": null},
                {"_name": "latin", "_character_set": "latin1"},
            ])),
            "mariadb",
        )
        .expect("valid");
        assert_eq!(schemas[0].character_set.as_deref(), Some("utf8mb4"));
        assert_eq!(schemas[1].character_set.as_deref(), Some("utf8mb3"));
        assert_eq!(schemas[1].collation.as_deref(), Some("utf8mb3_general_ci"));
        assert_eq!(
            schemas[2].collation, None,
            "the server's default for latin1"
        );

        let reserved = schemas_from_trove(Some(&json!([{"_name": "mysql"}])), "mariadb");
        assert_eq!(reserved, Err(InvalidInput::ReservedSchema("mysql".into())));
        assert!(schemas_from_trove(Some(&json!([{"_name": "sys"}])), "mysql").is_err());
        let charset = schemas_from_trove(
            Some(&json!([{"_name": "ab", "_character_set": "utf8' OR 1"}])),
            "mysql",
        )
        .expect_err("quote");
        assert!(
            charset.to_string().contains("not a valid character set"),
            "{charset}"
        );
        assert!(schemas_from_trove(Some(&json!({"_name": "ab"})), "mysql").is_err());
        assert_eq!(schemas_from_trove(Some(&Value::Null), "mysql"), Ok(vec![]));
    }

    #[test]
    fn users_need_a_valid_name_host_and_password() {
        let users = users_from_trove(
            Some(
                &json!([{"_name": "appuser", "_host": "%", "_password": "s3cr3t",
                "_databases": [{"_name": "app", "_collate": null, "_character_set": null}],
                "_is_root": false},
                {"_name": "ops", "_host": "10.0.%.%", "_password": "pw"}]),
            ),
            "mysql",
        )
        .expect("valid");
        assert_eq!(users[0].name, "appuser");
        assert_eq!(users[0].password.expose(), "s3cr3t");
        assert_eq!(users[0].databases, ["app"]);
        assert_eq!(users[1].host, "10.0.%.%");

        let error = |user: Value| {
            users_from_trove(Some(&json!([user])), "mysql")
                .expect_err("invalid")
                .to_string()
        };
        let message = error(json!({"_name": "nopass", "_host": "%"}));
        assert!(
            message.contains("'nopass'") && message.contains("no password"),
            "{message}"
        );
        let message = error(json!({"_name": "q", "_password": "it's"}));
        assert!(!message.contains("it's"), "the password leaked: {message}");
        assert!(error(json!({"_name": "root", "_password": "pw"})).contains("reserved"));
        assert!(error(json!({"_name": "a;b", "_password": "pw"})).contains("valid user name"));
        assert!(error(json!({"_name": "seventeen_chars_x", "_password": "pw"})).contains("16"));
        assert!(
            error(json!({"_name": "u", "_host": "example.com", "_password": "pw"}))
                .contains("valid hostname")
        );
        assert!(
            error(json!({"_name": "u", "_password": "pw", "_databases": [{"_name": "x"}]}))
                .contains("schema name")
        );
        for host in [
            "10.0.0.0/24",
            "fd00::/64",
            "10.0.0.0/255.255.255.0",
            "%",
            "10.%.0.1",
        ] {
            assert!(valid_host(host), "{host}");
        }
        for host in ["localhost", "10.0.0.0/33", "10.0.0.0/255.0.255.0", "%%"] {
            assert!(!valid_host(host), "{host}");
        }
    }
}
