//! The SQL the agent sends, built as Trove's `sql_query` builds it, with every name quoted.
//!
//! Names and passwords are validated before they get here ([`super::models`]); quoting is
//! still applied so that a statement can never be broken by its values. Statements that
//! carry a password print as their redacted form.

use std::fmt;

use netiso_config::Secret;

use super::models::{InvalidInput, Schema, User};

/// Trove's administrative user, created on `prepare` with every privilege.
pub const ADMIN_USER: &str = "os_admin";

/// One SQL statement; `Display` and `Debug` show it with any password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    text: String,
    shown: String,
    secret: Option<Secret>,
}

impl Statement {
    fn plain(text: String) -> Self {
        Self {
            shown: text.clone(),
            text,
            secret: None,
        }
    }

    fn with_password(before: &str, password: &Secret, after: &str) -> Self {
        Self {
            text: format!("{before}{}{after}", string(password.expose())),
            shown: format!("{before}'***'{after}"),
            secret: Some(password.clone()),
        }
    }

    /// `message` (a server error about this statement, which may quote it) with the
    /// statement's password replaced by `***`.
    pub fn redact(&self, message: &str) -> String {
        match &self.secret {
            Some(secret) if !secret.expose().is_empty() => message
                .replace(&string(secret.expose()), "'***'")
                .replace(secret.expose(), "***"),
            _ => message.to_owned(),
        }
    }

    /// The text to send to the server (may hold a password: never log it).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the text carries a secret.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Statement({})", self.shown)
    }
}

/// `` `name` ``, with backticks doubled.
fn identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `'text'`, with quotes doubled and backslashes escaped (MySQL's default `sql_mode`).
fn string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// `'user'@'host'`.
fn account(user: &str, host: &str) -> String {
    format!("{}@{}", string(user), string(host))
}

/// `CREATE DATABASE IF NOT EXISTS` with Trove's character set and collation clauses.
pub fn create_database(schema: &Schema) -> Statement {
    let mut text = format!("CREATE DATABASE IF NOT EXISTS {}", identifier(&schema.name));
    if let Some(charset) = &schema.character_set {
        text.push_str(&format!(" CHARACTER SET = {}", string(charset)));
    }
    if let Some(collation) = &schema.collation {
        text.push_str(&format!(" COLLATE = {}", string(collation)));
    }
    Statement::plain(text)
}

/// The statements that make `user` exist with exactly its password: created when absent,
/// its password set when present (so a repeated `prepare` converges).
pub fn create_user(user: &User) -> Vec<Statement> {
    user_with_password(&user.name, &user.host, &user.password)
}

fn user_with_password(name: &str, host: &str, password: &Secret) -> Vec<Statement> {
    let who = account(name, host);
    vec![
        Statement::with_password(
            &format!("CREATE USER IF NOT EXISTS {who} IDENTIFIED BY "),
            password,
            "",
        ),
        Statement::with_password(&format!("ALTER USER {who} IDENTIFIED BY "), password, ""),
    ]
}

/// `GRANT ALL PRIVILEGES ON `db`.* TO 'user'@'host'` for each of the user's databases.
pub fn grant_databases(user: &User) -> Vec<Statement> {
    user.databases
        .iter()
        .map(|database| {
            Statement::plain(format!(
                "GRANT ALL PRIVILEGES ON {}.* TO {}",
                identifier(database),
                account(&user.name, &user.host)
            ))
        })
        .collect()
}

/// Trove's `os_admin@localhost`: every privilege, with grant option.
pub fn create_admin(password: &Secret) -> Vec<Statement> {
    let mut statements = user_with_password(ADMIN_USER, "localhost", password);
    statements.push(Statement::plain(format!(
        "GRANT ALL PRIVILEGES ON *.* TO {} WITH GRANT OPTION",
        account(ADMIN_USER, "localhost")
    )));
    statements
}

/// `root@'%'` with `password` and every privilege: Trove's "enable root" when `prepare`
/// carries a root password.
pub fn enable_remote_root(password: &Secret) -> Vec<Statement> {
    let mut statements = user_with_password("root", "%", password);
    statements.push(Statement::plain(format!(
        "GRANT ALL PRIVILEGES ON *.* TO {} WITH GRANT OPTION",
        account("root", "%")
    )));
    statements
}

/// The accounts Trove removes when securing a new server: anonymous users, and root from
/// anywhere but localhost unless `keep_remote_root`. (Trove deletes rows of `mysql.user`;
/// MariaDB 10.4+ makes that a view, so the accounts are listed and dropped instead.)
pub fn insecure_accounts_query(keep_remote_root: bool) -> Statement {
    let mut text = "SELECT User, Host FROM mysql.user WHERE User = ''".to_owned();
    if !keep_remote_root {
        text.push_str(" OR (User = 'root' AND Host NOT IN ('localhost'))");
    }
    Statement::plain(text)
}

/// Trove's `SetServerVariable` (`apply_overrides`): `SET GLOBAL name=value`, booleans as
/// 1/0, numbers as they are, sizes such as `16M` as bytes (Trove's `to_bytes`), other strings
/// quoted; a name that is not a plain identifier is refused.
pub fn set_global(name: &str, value: &serde_json::Value) -> Result<Statement, InvalidInput> {
    use serde_json::Value;
    let refuse = |problem: String| InvalidInput::Override {
        name: name.to_owned(),
        problem,
    };
    let variable = name.replace('-', "_");
    if variable.is_empty()
        || !variable
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(refuse("not a server variable name".to_owned()));
    }
    let value = match value {
        Value::Bool(b) => u8::from(*b).to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(text) => match size_in_bytes(text) {
            Some(bytes) => bytes.to_string(),
            None => string(text),
        },
        other => return Err(refuse(format!("{other} is not a scalar"))),
    };
    Ok(Statement::plain(format!("SET GLOBAL {variable}={value}")))
}

/// `16M` → 16777216 (K, M, G, T as powers of 1024), as Trove's `to_bytes`.
fn size_in_bytes(text: &str) -> Option<u64> {
    let unit = match text.chars().last()? {
        'K' => 1u64 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        _ => return None,
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// `DROP USER IF EXISTS 'user'@'host'`.
pub fn drop_user(name: &str, host: &str) -> Statement {
    Statement::plain(format!("DROP USER IF EXISTS {}", account(name, host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "appuser".into(),
            host: "%".into(),
            password: Secret::new("s3cr3t"),
            databases: vec!["app".into(), "logs".into()],
        }
    }

    #[test]
    fn databases_are_created_with_trove_s_clauses() {
        let schema = Schema {
            name: "app".into(),
            character_set: Some("utf8mb4".into()),
            collation: Some("utf8mb4_general_ci".into()),
        };
        assert_eq!(
            create_database(&schema).text(),
            "CREATE DATABASE IF NOT EXISTS `app` CHARACTER SET = 'utf8mb4' COLLATE = 'utf8mb4_general_ci'"
        );
        let bare = Schema {
            name: "a b".into(),
            character_set: None,
            collation: Some("latin1_bin".into()),
        };
        assert_eq!(
            create_database(&bare).text(),
            "CREATE DATABASE IF NOT EXISTS `a b` COLLATE = 'latin1_bin'"
        );
    }

    #[test]
    fn users_are_created_then_granted_their_databases() {
        let statements = create_user(&user());
        assert_eq!(
            statements[0].text(),
            "CREATE USER IF NOT EXISTS 'appuser'@'%' IDENTIFIED BY 's3cr3t'"
        );
        assert_eq!(
            statements[1].text(),
            "ALTER USER 'appuser'@'%' IDENTIFIED BY 's3cr3t'"
        );
        let grants: Vec<String> = grant_databases(&user())
            .iter()
            .map(|s| s.text().to_owned())
            .collect();
        assert_eq!(
            grants,
            [
                "GRANT ALL PRIVILEGES ON `app`.* TO 'appuser'@'%'",
                "GRANT ALL PRIVILEGES ON `logs`.* TO 'appuser'@'%'"
            ]
        );
    }

    #[test]
    fn passwords_never_show_and_quotes_cannot_break_out() {
        let statements = create_user(&user());
        for statement in &statements {
            assert!(statement.has_secret());
            for shown in [statement.to_string(), format!("{statement:?}")] {
                assert!(
                    !shown.contains("s3cr3t") && shown.contains("'***'"),
                    "{shown}"
                );
            }
        }
        assert_eq!(
            statements[0].redact("syntax error near 'IDENTIFIED BY 's3cr3t''"),
            "syntax error near 'IDENTIFIED BY '***''"
        );
        let tricky = enable_remote_root(&Secret::new(r"a'b\"));
        assert_eq!(
            tricky[0].text(),
            r"CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY 'a''b\\'"
        );
        assert_eq!(identifier("x`y"), "`x``y`");
        assert!(
            !create_database(&Schema {
                name: "ab".into(),
                character_set: None,
                collation: None
            })
            .has_secret()
        );
    }

    #[test]
    fn securing_statements() {
        let admin = create_admin(&Secret::new("pw"));
        assert_eq!(
            admin[2].text(),
            "GRANT ALL PRIVILEGES ON *.* TO 'os_admin'@'localhost' WITH GRANT OPTION"
        );
        assert_eq!(
            insecure_accounts_query(false).text(),
            "SELECT User, Host FROM mysql.user WHERE User = '' OR (User = 'root' AND Host NOT IN ('localhost'))"
        );
        assert_eq!(
            insecure_accounts_query(true).text(),
            "SELECT User, Host FROM mysql.user WHERE User = ''"
        );
        assert_eq!(drop_user("", "%").text(), "DROP USER IF EXISTS ''@'%'");
    }

    #[test]
    fn server_variables_are_set_as_trove_sets_them() {
        use serde_json::json;
        let text = |name: &str, value: serde_json::Value| {
            set_global(name, &value).map(|s| s.text().to_owned())
        };
        assert_eq!(
            text("max_connections", json!(300)),
            Ok("SET GLOBAL max_connections=300".into())
        );
        assert_eq!(
            text("local-infile", json!(false)),
            Ok("SET GLOBAL local_infile=0".into())
        );
        assert_eq!(
            text("max_allowed_packet", json!("16M")),
            Ok("SET GLOBAL max_allowed_packet=16777216".into())
        );
        assert_eq!(
            text("sql_mode", json!("STRICT_ALL_TABLES")),
            Ok("SET GLOBAL sql_mode='STRICT_ALL_TABLES'".into())
        );
        assert!(text("a=1;DROP", json!(1)).is_err());
        assert!(text("x", json!([1])).is_err());
        assert_eq!(size_in_bytes("M"), None);
        assert_eq!(size_in_bytes("2T"), Some(2 << 40));
    }
}
