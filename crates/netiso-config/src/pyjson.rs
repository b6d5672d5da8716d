//! JSON text exactly as Python's `json.dumps` writes it by default (`", "` / `": "` separators,
//! `ensure_ascii=True`, `repr` floats, keys in insertion order, no trailing newline), so that
//! the files Trove's taskmanager injects (`eth1.json`, `daemon.json`), RPC bodies and the
//! ciphertexts computed over them are byte-identical to what Trove and oslo.messaging produce.
//!
//! Objects keep insertion order because this crate enables `serde_json`'s `preserve_order`
//! itself: build a [`serde_json::Map`] in Python's dict order and [`dumps`] writes it so.
//! Re-inserting an existing key keeps its place, like a Python dict assignment.

use std::io;

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CharEscape, Formatter, Serializer};

/// A `serde_json` formatter reproducing Python's default `json.dumps` output.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(python_float_repr(f64::from(value)).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json has already escaped quotes, backslashes and control characters; Python's
        // ensure_ascii additionally escapes DEL and everything outside ASCII.
        let mut start = 0;
        for (index, ch) in fragment.char_indices() {
            if ch.is_ascii() && ch != '\u{7f}' {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..index])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = index + ch.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        let text: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => return write!(w, "\\u{byte:04x}"),
        };
        w.write_all(text)
    }
}

/// The shortest digits that read back as `value`, in `{:e}` form, chosen as Python chooses
/// them: of the strings that short, the one nearest `value`, a tie going to the even digit.
/// Rust's shortest form can take the other one of a tie (`-762739865902090.25` prints as
/// `…090.3`, Python's `repr` says `…090.2`); the correctly rounded string of that length
/// (Rust rounds exact formatting half to even) is Python's whenever it reads back too.
fn shortest_round_trip(value: f64) -> String {
    let shortest = format!("{value:e}");
    let digits = shortest
        .split('e')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    let nearest = format!("{value:.*e}", digits.saturating_sub(1));
    if nearest.parse::<f64>() == Ok(value) {
        nearest
    } else {
        shortest
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for decimal exponents in
/// -4..16, scientific with a signed two-digit exponent otherwise.
fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let sign = if value.is_sign_negative() { "-" } else { "" };
    let scientific = shortest_round_trip(value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exponent + 1;
    let body = if (-3..=16).contains(&point) {
        if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{fraction}e{exp_sign}{:02}", exponent.unsigned_abs())
    };
    format!("{sign}{body}")
}

/// Serializes a JSON value the way Python's `json.dumps(value)` does.
pub fn dumps(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    let mut serializer = Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing a `Value` into a Vec cannot fail, and the formatter only emits ASCII.
    if value.serialize(&mut serializer).is_err() {
        return String::from("null");
    }
    String::from_utf8(out)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn separators_and_ascii_match_python() {
        let value =
            json!({"a": [1, 2, {"b": null}], "c": "é\u{1F600}\u{7f}\n\"\\/", "d": {}, "e": []});
        assert_eq!(
            dumps(&value),
            r#"{"a": [1, 2, {"b": null}], "c": "\u00e9\ud83d\ude00\u007f\n\"\\/", "d": {}, "e": []}"#
        );
    }

    #[test]
    fn floats_match_python_repr() {
        for (value, expected) in [
            (10.0, "10.0"),
            (0.46, "0.46"),
            (9536.74, "9536.74"),
            (1752000000.123456, "1752000000.123456"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-0.0, "-0.0"),
            (-2.5, "-2.5"),
            (1e300, "1e+300"),
            // Exactly …090.25, a tie between two shortest strings: Python takes the even digit.
            (-762_739_865_902_090.0 - 0.25, "-762739865902090.2"),
            (0.3, "0.3"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
        ] {
            assert_eq!(python_float_repr(value), expected, "{value}");
        }
    }

    #[test]
    fn key_order_is_preserved() {
        let value: Value = serde_json::from_str(r#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(dumps(&value), r#"{"z": 1, "a": 2}"#);
    }

    #[test]
    fn reassigning_a_key_keeps_its_place_like_a_python_dict() {
        let mut map = serde_json::Map::new();
        map.insert("z".to_owned(), json!(1));
        map.insert("a".to_owned(), json!(2));
        map.insert("z".to_owned(), json!(3));
        assert_eq!(dumps(&Value::Object(map)), r#"{"z": 3, "a": 2}"#);
    }

    #[test]
    fn separators_and_literals_match_python() {
        let value = json!({
            "bridge": "none",
            "ip-forward": false,
            "gw": null,
            "list": ["a", true],
            "empty": [],
            "obj": {},
        });
        assert_eq!(
            dumps(&value),
            r#"{"bridge": "none", "ip-forward": false, "gw": null, "list": ["a", true], "empty": [], "obj": {}}"#
        );
    }

    #[test]
    fn strings_are_ascii_escaped_like_python() {
        // Expected bytes produced by CPython 3.11: json.dumps("q\"b\\\n\r\t\b\f\x01\x7fé€😀")
        let text = "q\"b\\\n\r\t\u{8}\u{c}\u{1}\u{7f}é€😀";
        assert_eq!(
            dumps(&Value::String(text.to_owned())),
            r#""q\"b\\\n\r\t\b\f\u0001\u007f\u00e9\u20ac\ud83d\ude00""#
        );
    }
}
