//! Countersign's policy decision engine.
//!
//! This crate is pure: no I/O, no async runtime, no database or web framework. The server, the
//! command line and the browser (compiled to wasm32) share it so that every place that shows or
//! makes a decision agrees. Modelled on Cedar's authorizer: one total function,
//! [`evaluate`], with default deny. Loading a policy ([`PolicySet::load`]) is the only step that
//! can fail.
//!
//! - [`shell`] reads command lines (quoting, escapes, substitutions) into words and commands;
//! - [`analysis`] looks through wrappers (`sudo`, `env`, `sh -c`, ...) to what would run;
//! - [`catalogue`] says what each command that would run does (the command catalogue);
//! - [`policy`] is the TOML policy model, validated and compiled into regex sets;
//! - [`decision`] is the evaluation; [`approval`] the pure voting rules.

pub mod analysis;
pub mod approval;
pub mod catalogue;
pub mod decision;
pub mod executor;
pub mod policy;
pub mod record;
pub mod shell;
pub mod wire;

pub use approval::{can_approve, Eligibility, PendingJob, Quorum, Verdict, Vote};
pub use catalogue::{Catalogue, Classification, Effect};
pub use decision::{call_hash, evaluate, Decision, PatternMatch, Principal, Request};
pub use executor::{Executor, ExecutorKind, JobCall};
pub use policy::{
    ArgKind, Category, Effects, Operation, Pattern, PolicyError, PolicySet, Tool, UnknownCommands,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// The default policy for IT-MCP's tools, as shipped in `policies/default.toml`.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");

/// Load [`DEFAULT_POLICY`].
pub fn default_policy() -> Result<PolicySet, PolicyError> {
    PolicySet::load("policies/default.toml", DEFAULT_POLICY)
}

/// IT-MCP's own enforcement (`policies/it-mcp-compatible.toml`): the default policy without
/// asking on what the command catalogue finds, for teams moving over step by step.
pub const IT_MCP_COMPATIBLE_POLICY: &str = include_str!("../../policies/it-mcp-compatible.toml");

/// Load [`IT_MCP_COMPATIBLE_POLICY`].
pub fn it_mcp_compatible_policy() -> Result<PolicySet, PolicyError> {
    PolicySet::load("policies/it-mcp-compatible.toml", IT_MCP_COMPATIBLE_POLICY)
}

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
///
/// Its buffer has [`SLACK`] bytes past the block: a piece of up to that many bytes is stored
/// whole, with a fixed-size copy, and only the bytes that belong to the text are counted (the
/// rest is overwritten by what follows). This is how JSON strings are escaped into it
/// ([`JsonOut::json_str`]): eight bytes at a time, and one store per escape, with no call to
/// copy a few bytes.
pub(crate) struct HashWriter {
    hasher: Sha256,
    buf: [u8; HASH_BLOCK + SLACK],
    /// Bytes of `buf` gathered so far: at most [`HASH_BLOCK`] between writes.
    len: usize,
}

/// Bytes hashed at once (whole SHA-256 blocks, so that the hasher copies nothing).
const HASH_BLOCK: usize = 256;
/// Room past the block for one fixed-size store.
const SLACK: usize = 16;

impl Default for HashWriter {
    fn default() -> Self {
        HashWriter {
            hasher: Sha256::new(),
            buf: [0; HASH_BLOCK + SLACK],
            len: 0,
        }
    }
}

impl HashWriter {
    pub(crate) fn finish(mut self) -> String {
        self.hasher
            .update(self.buf.get(..self.len).unwrap_or_default());
        hex_digest(self.hasher.finalize().into())
    }

    /// Append the first `used` bytes of `piece` (`used` ≤ `N` ≤ [`SLACK`]): all `N` are
    /// stored with one fixed-size copy, and the ones past `used` are overwritten by the next
    /// store.
    #[inline(always)]
    fn push<const N: usize>(&mut self, piece: [u8; N], used: usize) {
        if let Some(slot) = self.buf.get_mut(self.len..self.len + N) {
            slot.copy_from_slice(&piece);
        }
        self.len += used;
        if self.len >= HASH_BLOCK {
            self.flush_block();
        }
    }

    /// Hash the full block and move what was gathered past it (less than [`SLACK`] bytes) to
    /// the front.
    #[cold]
    fn flush_block(&mut self) {
        let (block, rest) = self.buf.split_at_mut(HASH_BLOCK);
        self.hasher.update(&*block);
        let mut carried = [0u8; SLACK];
        carried.copy_from_slice(rest);
        if let Some(front) = self.buf.get_mut(..SLACK) {
            front.copy_from_slice(&carried);
        }
        self.len -= HASH_BLOCK;
    }

    /// `s` as an escaped JSON string literal (see [`write_json_str`]), straight into the buffer.
    fn escape_json(&mut self, s: &str) {
        self.push(*b"\"\0\0\0\0\0\0\0", 1);
        let bytes = s.as_bytes();
        // Sixteen bytes at a time while none needs escaping (most text), eight otherwise.
        let (pairs, rest) = bytes.as_chunks::<16>();
        for &pair in pairs {
            let (low, high) = pair.split_at(8);
            let low: [u8; 8] = low.try_into().unwrap_or_default();
            let high: [u8; 8] = high.try_into().unwrap_or_default();
            if escape_mask(u64::from_le_bytes(low)) | escape_mask(u64::from_le_bytes(high)) == 0 {
                self.push(pair, 16);
            } else {
                self.escape_chunk(low, 8);
                self.escape_chunk(high, 8);
            }
        }
        let (chunks, tail) = rest.as_chunks::<8>();
        for &chunk in chunks {
            self.escape_chunk(chunk, 8);
        }
        if !tail.is_empty() {
            // The last bytes, padded with bytes that need no escaping.
            self.escape_chunk(padded(tail, b'a'), tail.len());
        }
        self.push(*b"\"\0\0\0\0\0\0\0", 1);
    }

    /// The first `len` bytes of `chunk`, escaped.
    #[inline(always)]
    fn escape_chunk(&mut self, chunk: [u8; 8], len: usize) {
        let word = u64::from_le_bytes(chunk);
        if escape_mask(word) == 0 {
            self.push(chunk, len);
            return;
        }
        let mut from = 0;
        while from < len {
            // The lowest flagged byte is exact (only bytes above a hit can be flagged falsely),
            // so the bytes before it are stored as they are. Shifting brings in zero bytes at
            // the top, which are flagged, but never before `len`.
            let rest = word >> (8 * from);
            let mask = escape_mask(rest);
            let clean = if mask == 0 {
                8
            } else {
                (mask.trailing_zeros() / 8) as usize
            };
            let at = (from + clean).min(len);
            self.push(rest.to_le_bytes(), at - from);
            let Some(&b) = chunk.get(at).filter(|_| at < len) else {
                break;
            };
            self.push(escape_of(b), escaped_len(b));
            from = at + 1;
        }
    }
}

/// The first bytes of a chunk (fewer than eight), followed by `fill`.
fn padded(tail: &[u8], fill: u8) -> [u8; 8] {
    let mut chunk = [fill; 8];
    if let Some(head) = chunk.get_mut(..tail.len()) {
        head.copy_from_slice(tail);
    }
    chunk
}

/// How a byte that [`escape_mask`] flags is written in a JSON string, padded to eight bytes.
fn escape_of(b: u8) -> [u8; 8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let pair = |c: u8| [b'\\', c, 0, 0, 0, 0, 0, 0];
    match b {
        b'"' => pair(b'"'),
        b'\\' => pair(b'\\'),
        b'\n' => pair(b'n'),
        b'\r' => pair(b'r'),
        b'\t' => pair(b't'),
        0x08 => pair(b'b'),
        0x0c => pair(b'f'),
        _ => [
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
            0,
            0,
        ],
    }
}

/// How many bytes of [`escape_of`] are the escape.
fn escaped_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        _ => 6,
    }
}

/// Write a JSON object's canonical form (keys sorted).
pub(crate) fn write_canonical_map<W: JsonOut>(map: &serde_json::Map<String, Value>, out: &mut W) {
    let _ = try_write_map(map, out);
}

impl fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        if bytes.len() >= 64 {
            // A block or more goes straight to the hasher (which hashes whole blocks in place).
            self.hasher
                .update(self.buf.get(..self.len).unwrap_or_default());
            self.len = 0;
            self.hasher.update(bytes);
            return Ok(());
        }
        let (chunks, tail) = bytes.as_chunks::<8>();
        for &chunk in chunks {
            self.push(chunk, 8);
        }
        if !tail.is_empty() {
            self.push(padded(tail, 0), tail.len());
        }
        Ok(())
    }
}

/// Where canonical JSON goes: a `String`, or the hasher, which escapes strings its own way.
pub(crate) trait JsonOut: fmt::Write {
    /// A JSON string literal, escaped exactly as serde_json escapes it.
    fn json_str(&mut self, s: &str) -> fmt::Result {
        write_json_str(s, self)
    }
}

impl JsonOut for String {}

impl JsonOut for HashWriter {
    fn json_str(&mut self, s: &str) -> fmt::Result {
        self.escape_json(s);
        Ok(())
    }
}

fn hex_digest(digest: [u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits are ASCII: this never falls back to the empty string.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// Write `value` as canonical JSON: keys sorted, no whitespace, strings escaped as serde_json does.
pub(crate) fn write_canonical<W: JsonOut>(value: &Value, out: &mut W) {
    // Writing to a String or a hasher cannot fail.
    let _ = try_write_canonical(value, out);
}

fn try_write_canonical<W: JsonOut>(value: &Value, out: &mut W) -> fmt::Result {
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
        Value::String(s) => out.json_str(s),
        Value::Number(n) => write!(out, "{n}"),
        Value::Bool(b) => out.write_str(if *b { "true" } else { "false" }),
        Value::Null => out.write_str("null"),
    }
}

fn try_write_map<W: JsonOut>(map: &serde_json::Map<String, Value>, out: &mut W) -> fmt::Result {
    // serde_json's map iterates in key order unless its `preserve_order` feature is on (some
    // dependency may turn it on): sort only then.
    if !map.keys().is_sorted() {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        return write_entries(entries.into_iter(), out);
    }
    write_entries(map.iter(), out)
}

fn write_entries<'v, W: JsonOut>(
    entries: impl Iterator<Item = (&'v String, &'v Value)>,
    out: &mut W,
) -> fmt::Result {
    out.write_char('{')?;
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        out.json_str(key)?;
        out.write_char(':')?;
        try_write_canonical(value, out)?;
    }
    out.write_char('}')
}

/// The bytes [`write_json_str`] escapes: `"`, `\\` and the control characters.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The high bit of each byte of `word` (little-endian) that is `"`, `\\` or below 0x20.
fn escape_mask(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = word.wrapping_sub(0x20 * ONES) & !word & HIGH;
    control
        | zero_byte(word ^ (u64::from(b'"') * ONES))
        | zero_byte(word ^ (u64::from(b'\\') * ONES))
}

/// A JSON string literal, escaped exactly as serde_json escapes it.
pub(crate) fn write_json_str<W: fmt::Write + ?Sized>(s: &str, out: &mut W) -> fmt::Result {
    out.write_char('"')?;
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    // Only ASCII bytes are ever escaped, so scanning bytes never splits a character.
    while i < bytes.len() {
        // Eight bytes at a time while none of them needs escaping (most text).
        if let Some(chunk) = bytes
            .get(i..i + 8)
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
        {
            let mask = escape_mask(u64::from_le_bytes(chunk));
            if mask == 0 {
                i += 8;
                continue;
            }
            // The lowest flagged byte is exact (only bytes above a hit can be flagged falsely).
            i += (mask.trailing_zeros() / 8) as usize;
        }
        let at = i;
        i += 1;
        let Some(&b) = bytes.get(at) else {
            break;
        };
        if !NEEDS_ESCAPE[usize::from(b)] {
            continue;
        }
        // The same escapes as the hasher's (ASCII, so always a `str`).
        let escape = escape_of(b);
        let escape = escape.get(..escaped_len(b)).unwrap_or_default();
        out.write_str(&s[start..at])?;
        out.write_str(std::str::from_utf8(escape).unwrap_or_default())?;
        start = i;
    }
    out.write_str(&s[start..])?;
    out.write_char('"')
}

/// How dangerous an operation is, in IT-MCP's words (`LOW` .. `CRITICAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    /// Every level, lowest first.
    pub const ALL: [Risk; 4] = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical];

    /// The spelling stored in IT-MCP's `audit_logs.risk_level` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "LOW",
            Risk::Medium => "MEDIUM",
            Risk::High => "HIGH",
            Risk::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the enforcer says about a call, in IT-MCP's `decision_action` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
    RequireApproval,
}

impl Action {
    /// The spelling stored in IT-MCP's `audit_logs.decision_action` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::RequireApproval => "require_approval",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_levels_are_ordered_and_spelled_like_it_mcp() {
        assert!(
            Risk::Low < Risk::Medium && Risk::Medium < Risk::High && Risk::High < Risk::Critical
        );
        let spelled: Vec<&str> = Risk::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(spelled, ["LOW", "MEDIUM", "HIGH", "CRITICAL"]);
        assert_eq!(
            serde_json::to_string(&Risk::Critical).ok().as_deref(),
            Some("\"CRITICAL\"")
        );
    }

    #[test]
    fn actions_are_spelled_like_it_mcp() {
        assert_eq!(Action::RequireApproval.to_string(), "require_approval");
        assert_eq!(
            serde_json::to_string(&Action::Deny).ok().as_deref(),
            Some("\"deny\"")
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":"é"}}"#).expect("json");
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"é","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn strings_are_escaped_like_serde_json_and_streaming_hashes_the_same() {
        let tricky = "quote\" back\\slash \n\r\t\u{8}\u{c}\u{1}\u{1f} é ✓ \u{7f}";
        let mut out = String::new();
        write_json_str(tricky, &mut out).expect("write");
        assert_eq!(out, serde_json::to_string(tricky).expect("serde_json"));
        // Every ASCII byte and a few multi-byte characters, at every offset of an 8-byte chunk,
        // alone and next to other bytes that need escaping.
        let specials: Vec<String> = (0u8..0x80)
            .map(|b| char::from(b).to_string())
            .chain(["é".into(), "✓".into(), "\u{10ffff}".into()])
            .collect();
        for special in &specials {
            for offset in 0..17 {
                for tail in ["", "\"", "x\n", "abcdefghij"] {
                    let text = format!("{}{special}{tail}", "a".repeat(offset));
                    out.clear();
                    write_json_str(&text, &mut out).expect("write");
                    assert_eq!(
                        out,
                        serde_json::to_string(&text).expect("serde_json"),
                        "{text:?}"
                    );
                }
            }
        }
        let value: Value =
            serde_json::json!({"b": [tricky, 1.5, -2, true, null], "a": {"z": {}, "y": []}});
        assert_eq!(
            canonical_sha256(&value),
            sha256_hex(canonical_json(&value).as_bytes())
        );
    }

    /// The hash of `pieces` written to a [`HashWriter`], strings escaped by it (`true`) or
    /// written as they are.
    fn hashed(pieces: &[(bool, &str)]) -> String {
        let mut hasher = HashWriter::default();
        for &(escaped, piece) in pieces {
            if escaped {
                hasher.json_str(piece).expect("hash");
            } else {
                fmt::Write::write_str(&mut hasher, piece).expect("hash");
            }
        }
        hasher.finish()
    }

    #[test]
    fn the_hasher_escapes_strings_as_serde_json_does() {
        let specials: Vec<String> = (0u8..0x80)
            .map(|b| char::from(b).to_string())
            .chain(["é".into(), "✓".into(), "\u{10ffff}".into()])
            .collect();
        // Every special byte at every offset of a chunk, then next to the end of a block:
        // what was gathered before it (`lead`) moves where the buffer fills up.
        for lead in [0, 1, 7, 8, 200, 250, 255] {
            let lead = "L".repeat(lead);
            for special in &specials {
                for offset in [0, 1, 5, 6, 7, 8, 9, 15, 16, 17, 60, 61, 62, 63, 64] {
                    for tail in ["", "\"", "x\n", "abcdefghij", "\"\"\"\"\"\"\"\"\"\"\""] {
                        let text = format!("{}{special}{tail}", "a".repeat(offset));
                        let expected = format!(
                            "{lead}{}!",
                            serde_json::to_string(&text).expect("serde_json")
                        );
                        assert_eq!(
                            hashed(&[(false, &lead), (true, &text), (false, "!")]),
                            sha256_hex(expected.as_bytes()),
                            "{lead:?} {text:?}"
                        );
                    }
                }
            }
        }
        // Long texts: many blocks, escapes everywhere, and pieces of every size around them.
        let script =
            "find /var/log -name '*.gz' | xargs rm; echo \"$(date)\\t\" \u{1}>> /x\n".repeat(70);
        for cut in [0, 1, 63, 64, 65, 255, 256, 257, 1000] {
            let (a, b) = script.split_at(cut.min(script.len()));
            let expected = format!(
                "{}{a}{}",
                serde_json::to_string(&script).expect("serde_json"),
                serde_json::to_string(b).expect("serde_json")
            );
            assert_eq!(
                hashed(&[(true, &script), (false, a), (true, b)]),
                sha256_hex(expected.as_bytes()),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn the_call_hash_is_the_hash_of_the_canonical_call() {
        let mut args = serde_json::Map::new();
        args.insert("command".into(), Value::String("rm -rf \"/tmp/x\"".into()));
        args.insert("a".into(), serde_json::json!({"z": 1, "b": [true]}));
        let request = Request {
            tool: "ssh-exec".into(),
            operation: "executeCommand".into(),
            args: args.clone(),
            target: Some("web-01".into()),
        };
        let expected = serde_json::json!({"tool": "ssh-exec", "operation": "executeCommand", "args": args, "target": "web-01"});
        assert_eq!(call_hash(&request), canonical_sha256(&expected));
        let untargeted = Request {
            target: None,
            ..request
        };
        assert_ne!(call_hash(&untargeted), canonical_sha256(&expected));
    }
}
