//! The canonical JSON of a value (object keys sorted, no insignificant whitespace, strings
//! escaped exactly as serde_json escapes them) and SHA-256 over it: what call hashes, body
//! hashes and policy hashes are computed from. One escaper ([`write_json_str`]) writes every
//! JSON string, whether into text or straight into the hash.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_digest(Sha256::new_with_prefix(bytes).finalize().into())
}

/// JSON with object keys sorted and no insignificant whitespace: the form that is hashed.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// SHA-256 (hex) of a value's canonical JSON, streamed into the hash without building the text.
pub fn canonical_sha256(value: &Value) -> String {
    let mut hasher = HashWriter::default();
    write_canonical(value, &mut hasher);
    hasher.finish()
}

/// A `fmt::Write` that feeds SHA-256, gathering the many small pieces of a JSON text into
/// blocks first (one hasher update per [`HASH_BLOCK`] bytes rather than one per token).
pub(crate) struct HashWriter {
    hasher: Sha256,
    buf: Vec<u8>,
}

/// Bytes hashed at once (whole SHA-256 blocks).
const HASH_BLOCK: usize = 256;

impl Default for HashWriter {
    fn default() -> Self {
        HashWriter {
            hasher: Sha256::new(),
            buf: Vec::with_capacity(HASH_BLOCK),
        }
    }
}

impl HashWriter {
    pub(crate) fn finish(mut self) -> String {
        self.hasher.update(&self.buf);
        hex_digest(self.hasher.finalize().into())
    }
}

impl fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.buf.len() + s.len() > HASH_BLOCK {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
        if s.len() >= HASH_BLOCK {
            self.hasher.update(s.as_bytes());
        } else {
            self.buf.extend_from_slice(s.as_bytes());
        }
        Ok(())
    }
}

fn hex_digest(digest: [u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

/// Write `value` as canonical JSON: keys sorted, no whitespace, strings escaped as serde_json does.
pub(crate) fn write_canonical<W: fmt::Write>(value: &Value, out: &mut W) {
    // Writing to a String or a hasher cannot fail.
    let _ = try_write_canonical(value, out);
}

/// Write a JSON object's canonical form (keys sorted).
pub(crate) fn write_canonical_map<W: fmt::Write>(
    map: &serde_json::Map<String, Value>,
    out: &mut W,
) {
    let _ = try_write_map(map, out);
}

fn try_write_canonical<W: fmt::Write>(value: &Value, out: &mut W) -> fmt::Result {
    match value {
        Value::Object(map) => try_write_map(map, out),
        Value::Array(items) => {
            out.write_char('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                try_write_canonical(item, out)?;
            }
            out.write_char(']')
        }
        Value::String(s) => write_json_str(s, out),
        Value::Number(n) => write!(out, "{n}"),
        Value::Bool(b) => out.write_str(if *b { "true" } else { "false" }),
        Value::Null => out.write_str("null"),
    }
}

fn try_write_map<W: fmt::Write>(map: &serde_json::Map<String, Value>, out: &mut W) -> fmt::Result {
    // serde_json's map iterates in key order unless its `preserve_order` feature is on (some
    // dependency may turn it on): sort only then.
    if !map.keys().is_sorted() {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        return write_entries(entries.into_iter(), out);
    }
    write_entries(map.iter(), out)
}

fn write_entries<'v, W: fmt::Write>(
    entries: impl Iterator<Item = (&'v String, &'v Value)>,
    out: &mut W,
) -> fmt::Result {
    out.write_char('{')?;
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write_json_str(key, out)?;
        out.write_char(':')?;
        try_write_canonical(value, out)?;
    }
    out.write_char('}')
}

/// How serde_json writes a byte inside a string, when it is not written as it is: `"`, `\\`
/// and the control characters.
fn escape(b: u8) -> Option<&'static str> {
    const CONTROL: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011",
        "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019",
        "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    ];
    match b {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        _ => CONTROL.get(usize::from(b)).copied(),
    }
}

/// A JSON string literal, escaped exactly as serde_json escapes it. The text between escapes is
/// written in one piece.
pub(crate) fn write_json_str<W: fmt::Write + ?Sized>(s: &str, out: &mut W) -> fmt::Result {
    out.write_char('"')?;
    let mut start = 0;
    // Only ASCII bytes are ever escaped, so cutting at them never splits a character.
    for (at, &b) in s.as_bytes().iter().enumerate() {
        if let Some(escaped) = escape(b) {
            out.write_str(&s[start..at])?;
            out.write_str(escaped)?;
            start = at + 1;
        }
    }
    out.write_str(&s[start..])?;
    out.write_char('"')
}
