//! Python `json.dumps` output, byte for byte, for the files Trove writes.
//!
//! Defaults of `json.dumps`: separators `", "` and `": "`, `ensure_ascii=True` (every
//! non-ASCII character as `\uXXXX`, astral ones as a surrogate pair, lowercase hex), keys
//! in insertion order, no trailing newline.

use std::fmt::Write as _;

/// A JSON value with insertion-ordered objects, rendered like Python.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PyJson {
    Null,
    Bool(bool),
    Str(String),
    List(Vec<PyJson>),
    Object(Vec<(String, PyJson)>),
}

impl PyJson {
    /// `json.dumps(value)`.
    pub(crate) fn dumps(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            PyJson::Null => out.push_str("null"),
            PyJson::Bool(true) => out.push_str("true"),
            PyJson::Bool(false) => out.push_str("false"),
            PyJson::Str(text) => write_string(out, text),
            PyJson::List(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            PyJson::Object(members) => {
                out.push('{');
                for (index, (key, value)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    write_string(out, key);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Python's `py_encode_basestring_ascii`.
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_literals_match_python() {
        let value = PyJson::Object(vec![
            ("bridge".to_owned(), PyJson::Str("none".to_owned())),
            ("ip-forward".to_owned(), PyJson::Bool(false)),
            ("gw".to_owned(), PyJson::Null),
            (
                "list".to_owned(),
                PyJson::List(vec![PyJson::Str("a".to_owned()), PyJson::Bool(true)]),
            ),
            ("empty".to_owned(), PyJson::List(Vec::new())),
            ("obj".to_owned(), PyJson::Object(Vec::new())),
        ]);
        assert_eq!(
            value.dumps(),
            r#"{"bridge": "none", "ip-forward": false, "gw": null, "list": ["a", true], "empty": [], "obj": {}}"#
        );
    }

    #[test]
    fn strings_are_ascii_escaped_like_python() {
        // Expected bytes produced by CPython 3.11: json.dumps("q\"b\\\n\r\t\b\f\x01\x7fé€😀")
        let text = "q\"b\\\n\r\t\u{8}\u{c}\u{1}\u{7f}é€😀";
        assert_eq!(
            PyJson::Str(text.to_owned()).dumps(),
            r#""q\"b\\\n\r\t\b\f\u0001\u007f\u00e9\u20ac\ud83d\ude00""#
        );
    }
}
