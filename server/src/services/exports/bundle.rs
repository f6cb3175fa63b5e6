//! Evidence bundles: a tar archive an assessor verifies offline.
//!
//! | file            | what                                                               |
//! |-----------------|--------------------------------------------------------------------|
//! | `manifest.json` | period, filters, generator, chain segment, each file's SHA-256     |
//! | `manifest.sig`  | Ed25519 signature of `manifest.json`'s exact bytes (base64)        |
//! | `summary.pdf`   | the PDF summary                                                    |
//! | `events.csv`    | the filtered rows (RFC 4180)                                       |
//! | `events.jsonl`  | the filtered rows, complete with hashes                            |
//! | `chain.jsonl`   | every row of the period's chain segment, so its links can be checked |
//! | `policies.jsonl`| each policy the segment's rows name: hash, name and text (TOML)    |
//!
//! [`verify`] checks the signature, every file's hash and size, that no file was added, that
//! the chain segment links and hashes correctly from the manifest's start to its end, that
//! every filtered event is a row of that segment, and that every policy its rows name is listed
//! with a text that loads and hashes to that policy's hash. A decision row keeps only what its
//! policy cannot give back (`enforcer::record`); with the policy's text, the whole decision can
//! be rebuilt offline. A policy known by hash alone (rows from before policies were kept) is
//! listed without a name or text.

use super::summary::{walk, ChainCheck};
use super::StreamError;
use super::{csv_row, pdf, ExportRow, Job, CSV_COLUMNS};
use crate::store::audit::{hex, row_hash};
use crate::store::Store;
use base64::Engine;
use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use tokio::sync::mpsc;

/// What a manifest says it is.
pub const MANIFEST_FORMAT: &str = "countersign-evidence-bundle/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    pub first_seq: i64,
    pub last_seq: i64,
    pub rows: u64,
    /// The hash the first row links to (the row before the segment, or the genesis hash).
    pub prev_hash: String,
    pub last_hash: String,
    /// Whether the segment verified when the bundle was made, and if not, why.
    pub verified: bool,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub generated_at: String,
    pub generated_by: String,
    pub from: String,
    pub to: String,
    pub framework: Option<String>,
    pub filters: BTreeMap<String, String>,
    /// Rows in `events.csv` and `events.jsonl`.
    pub events: u64,
    /// The period's chain segment (`chain.jsonl`); none when the period has no rows.
    pub chain: Option<ChainInfo>,
    pub files: Vec<FileEntry>,
    pub signature_algorithm: String,
    /// The signer's public key (base64). Pass the key you trust with `--public-key`: this one
    /// only says who signed.
    pub public_key: String,
}

/// One line of `policies.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub policy_hash: String,
    pub name: Option<String>,
    /// The policy's TOML text.
    pub source: Option<String>,
}

/// A writer or reader that hashes and counts what goes through it.
struct Hashing<T> {
    inner: T,
    hash: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Finish a hashed file: flush it and say what it holds.
fn entry(name: &str, mut writer: Hashing<BufWriter<File>>) -> Result<FileEntry, StreamError> {
    writer.flush().map_err(|e| e.to_string())?;
    Ok(FileEntry {
        name: name.to_string(),
        sha256: hex(&writer.hash.finalize()),
        bytes: writer.bytes,
    })
}

fn create(dir: &Path, name: &str) -> Result<Hashing<BufWriter<File>>, StreamError> {
    let file = File::create(dir.join(name)).map_err(|e| e.to_string())?;
    Ok(Hashing::new(BufWriter::with_capacity(256 * 1024, file)))
}

/// Sends what is written to the response body in 256 KiB chunks (from a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// Write the bundle's files to a temporary folder (one pass over the chain segment), sign the
/// manifest, then stream the archive.
pub async fn stream<S: Store>(
    store: &S,
    job: &Job,
    key: &SigningKey,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), StreamError> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut chain = create(dir.path(), "chain.jsonl")?;
    let mut jsonl = create(dir.path(), "events.jsonl")?;
    let mut csv = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(create(dir.path(), "events.csv")?);
    let mut selected_rows = 0u64;
    let mut policies = std::collections::BTreeSet::new();
    let summary = walk(store, job, |row, selected| {
        if let Some(hash) = &row.event.policy_hash {
            if !policies.contains(hash) {
                policies.insert(hash.clone());
            }
        }
        let export = ExportRow::from(row);
        let line = |out: &mut Hashing<BufWriter<File>>| -> Result<(), StreamError> {
            serde_json::to_writer(&mut *out, &export).map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(|e| e.to_string().into())
        };
        line(&mut chain)?;
        if selected {
            line(&mut jsonl)?;
            csv.serialize(csv_row(&export)).map_err(|e| e.to_string())?;
            selected_rows += 1;
        }
        Ok(())
    })
    .await?;
    if selected_rows == 0 {
        csv.write_record(CSV_COLUMNS).map_err(|e| e.to_string())?;
    }
    let csv = csv.into_inner().map_err(|e| e.to_string())?;
    let mut policies_file = create(dir.path(), "policies.jsonl")?;
    for policy_hash in policies {
        let (name, source) = store
            .policy_version(&policy_hash)
            .await
            .map_err(|e| format!("cannot read the policies: {e}"))?
            .unwrap_or_default();
        let line = PolicyEntry {
            policy_hash,
            name,
            source,
        };
        serde_json::to_writer(&mut policies_file, &line).map_err(|e| e.to_string())?;
        policies_file.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    let pdf_bytes = pdf::render(&summary);
    let mut pdf_file = create(dir.path(), "summary.pdf")?;
    pdf_file.write_all(&pdf_bytes).map_err(|e| e.to_string())?;
    let files = vec![
        entry("summary.pdf", pdf_file)?,
        entry("events.csv", csv)?,
        entry("events.jsonl", jsonl)?,
        entry("chain.jsonl", chain)?,
        entry("policies.jsonl", policies_file)?,
    ];
    let spec = &job.spec;
    let check = &summary.chain;
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        generated_at: super::rfc3339(job.generated_at),
        generated_by: job.generated_by.clone(),
        from: super::rfc3339(spec.from),
        to: super::rfc3339(spec.to),
        framework: spec.framework.map(|f| f.as_str().to_string()),
        filters: spec
            .filters()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        events: summary.events,
        chain: (check.rows > 0).then(|| ChainInfo {
            first_seq: check.first_seq,
            last_seq: check.last_seq,
            rows: check.rows,
            prev_hash: check.prev_hash.clone(),
            last_hash: check.last_hash.clone(),
            verified: check.verified(),
            problem: check
                .problem
                .as_ref()
                .map(|(seq, why)| format!("row {seq}: {why}")),
        }),
        files,
        signature_algorithm: "Ed25519".to_string(),
        public_key: super::public_key_text(&key.verifying_key()),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    manifest_bytes.push(b'\n');
    let signature = key.sign(&manifest_bytes);
    let signature_text = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    );
    let tx = tx.clone();
    let names: Vec<String> = manifest.files.iter().map(|f| f.name.clone()).collect();
    tokio::task::spawn_blocking(move || -> Result<(), StreamError> {
        let mut archive = tar::Builder::new(ChannelWriter {
            tx,
            buf: Vec::with_capacity(256 * 1024),
        });
        let mut add_bytes = |name: &str, bytes: &[u8]| -> Result<(), StreamError> {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0));
            header.set_cksum();
            archive
                .append_data(&mut header, name, bytes)
                .map_err(|e| e.to_string().into())
        };
        add_bytes("manifest.json", &manifest_bytes)?;
        add_bytes("manifest.sig", signature_text.as_bytes())?;
        for name in names {
            let mut file = File::open(dir.path().join(&name)).map_err(|e| e.to_string())?;
            archive
                .append_file(&name, &mut file)
                .map_err(|e| e.to_string())?;
        }
        let mut out = archive.into_inner().map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string().into())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// What verifying a bundle found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub manifest: Manifest,
    /// Whether the signature was checked against a key the caller gave (not only the one in
    /// the manifest).
    pub trusted_key: bool,
}

message_error!(
    /// Why an evidence bundle does not verify (`countersign audit verify-export`).
    VerifyError
);

/// Read a public key: base64 text, or a file holding it (or the JSON `/api/v1/audit/public-key`
/// serves).
pub fn read_public_key(text: &str) -> Result<VerifyingKey, VerifyError> {
    let content = match std::fs::read_to_string(text) {
        Ok(content) => content,
        Err(_) => text.to_string(),
    };
    let content = content.trim();
    let b64 = match serde_json::from_str::<serde_json::Value>(content) {
        Ok(value) => value
            .get("public_key")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or("the key file is JSON without a public_key field")?,
        Err(_) => content.to_string(),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "the public key is not base64 (nor a file holding it)".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the public key must be 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "the public key is not a valid Ed25519 key".into())
}

/// What is done with each line of a JSON Lines file while it is hashed.
type LineCheck<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), VerifyError>;

/// The checks made while reading one file of the archive.
#[derive(Default)]
struct FileRead {
    sha256: String,
    bytes: u64,
}

/// Hash a reader, handing it line by line to `each` (for the JSON Lines files) when given.
fn read_entry(reader: impl Read, mut each: Option<LineCheck<'_>>) -> Result<FileRead, VerifyError> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read the archive: {e}"))?;
        if n == 0 {
            break;
        }
        hash.update(&line);
        bytes += n as u64;
        if let Some(each) = each.as_mut() {
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if !text.is_empty() {
                each(text)?;
            }
        }
    }
    Ok(FileRead {
        sha256: hex(&hash.finalize()),
        bytes,
    })
}

fn parse_row(file: &str, line: &[u8]) -> Result<crate::store::AuditRecord, VerifyError> {
    let row: ExportRow = serde_json::from_slice(line)
        .map_err(|e| format!("{file}: a line is not an audit row ({e})"))?;
    row.to_record()
        .map_err(|e| VerifyError(format!("{file}: {e}")))
}

/// A listed policy's text, when it has one, loads and hashes to the hash it is listed under.
fn check_policy_text(policy: &PolicyEntry) -> Result<(), VerifyError> {
    let Some(source) = &policy.source else {
        return Ok(());
    };
    let hash = &policy.policy_hash;
    match enforcer::PolicySet::load(&format!("policy {hash}"), source) {
        Ok(loaded) if loaded.hash() == hash => Ok(()),
        Ok(_) => Err(format!(
            "policies.jsonl: the text of policy {hash} does not hash to it (it was changed)"
        )
        .into()),
        Err(_) => Err(format!(
            "policies.jsonl: the text of policy {hash} does not load (it was changed)"
        )
        .into()),
    }
}

/// Verify a bundle offline. Errors name what failed.
pub fn verify(path: &Path, key: Option<&VerifyingKey>) -> Result<Verified, VerifyError> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut signature_text: Option<String> = None;
    let mut read: BTreeMap<String, FileRead> = BTreeMap::new();
    let mut chain = ChainCheck::default();
    let mut chain_hashes: HashSet<String> = HashSet::new();
    // The policies the chain's rows name, and those policies.jsonl lists.
    let mut named_policies: HashSet<String> = HashSet::new();
    let mut listed_policies: Option<HashSet<String>> = None;
    let mut events: Vec<(i64, String)> = Vec::new();
    let mut event_rows = 0u64;
    // The CSV's data rows, or why it is not CSV (reported after the hash checks).
    let mut csv_rows: Option<Result<u64, VerifyError>> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("{} is not a tar archive: {e}", path.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("the archive is damaged: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("the archive is damaged: {e}"))?
            .to_string_lossy()
            .to_string();
        if !seen.insert(name.clone()) {
            return Err(format!("{name} appears twice in the archive").into());
        }
        match name.as_str() {
            "manifest.json" => {
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("cannot read manifest.json: {e}"))?;
                manifest_bytes = Some(bytes);
            }
            "manifest.sig" => {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .map_err(|e| format!("cannot read manifest.sig: {e}"))?;
                signature_text = Some(text);
            }
            "chain.jsonl" => {
                let mut each = |line: &[u8]| -> Result<(), VerifyError> {
                    let row = parse_row("chain.jsonl", line)?;
                    chain.push(&row);
                    if let Some(hash) = row.event.policy_hash {
                        named_policies.insert(hash);
                    }
                    chain_hashes.insert(row.row_hash);
                    Ok(())
                };
                let got = read_entry(&mut entry, Some(&mut each))?;
                read.insert(name, got);
            }
            "policies.jsonl" => {
                let listed = listed_policies.insert(HashSet::new());
                let mut each = |line: &[u8]| -> Result<(), VerifyError> {
                    let policy: PolicyEntry = serde_json::from_slice(line)
                        .map_err(|e| format!("policies.jsonl: a line is not a policy ({e})"))?;
                    check_policy_text(&policy)?;
                    listed.insert(policy.policy_hash);
                    Ok(())
                };
                let got = read_entry(&mut entry, Some(&mut each))?;
                read.insert(name, got);
            }
            "events.jsonl" => {
                let mut each = |line: &[u8]| -> Result<(), VerifyError> {
                    let row = parse_row("events.jsonl", line)?;
                    if row_hash(&row.id, row.seq, &row.event, &row.prev_hash) != row.row_hash {
                        return Err(format!(
                            "events.jsonl: row {} does not match its hash (it was changed)",
                            row.seq
                        )
                        .into());
                    }
                    event_rows += 1;
                    events.push((row.seq, row.row_hash));
                    Ok(())
                };
                let got = read_entry(&mut entry, Some(&mut each))?;
                read.insert(name, got);
            }
            "events.csv" => {
                // Hashed and parsed in the same pass.
                let mut reader = Hashing::new(&mut entry);
                let mut rows = 0u64;
                let parsed = csv::Reader::from_reader(&mut reader)
                    .records()
                    .try_for_each(|record| record.map(|_| rows += 1))
                    .map(|()| rows)
                    .map_err(|e| format!("events.csv is not valid CSV: {e}"));
                std::io::copy(&mut reader, &mut std::io::sink())
                    .map_err(|e| format!("cannot read the archive: {e}"))?;
                csv_rows = Some(parsed.map_err(VerifyError));
                read.insert(
                    name,
                    FileRead {
                        sha256: hex(&reader.hash.finalize()),
                        bytes: reader.bytes,
                    },
                );
            }
            _ => {
                let got = read_entry(&mut entry, None)?;
                read.insert(name, got);
            }
        }
    }
    let manifest_bytes = manifest_bytes.ok_or("the bundle has no manifest.json")?;
    let signature_text = signature_text.ok_or("the bundle has no manifest.sig")?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| format!("manifest.json is not a valid manifest: {e}"))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(format!(
            "manifest.json: unknown format {:?} (expected {MANIFEST_FORMAT})",
            manifest.format
        )
        .into());
    }
    // 1. The signature over the manifest's exact bytes.
    let embedded = read_public_key(&manifest.public_key)
        .map_err(|e| format!("manifest.json: public_key: {e}"))?;
    let signer = key.unwrap_or(&embedded);
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_text.trim())
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or("manifest.sig is not a base64 Ed25519 signature")?;
    signer
        .verify_strict(&manifest_bytes, &signature)
        .map_err(|_| {
            if key.is_some() && key != Some(&embedded) {
                "signature: manifest.json was not signed by the given public key".to_string()
            } else {
                "signature: manifest.sig does not match manifest.json (the manifest was changed)"
                    .to_string()
            }
        })?;
    // 2. Every file as the manifest lists it, and nothing else.
    for listed in &manifest.files {
        let got = read
            .get(&listed.name)
            .ok_or_else(|| format!("{}: listed in the manifest but missing", listed.name))?;
        if got.sha256 != listed.sha256 || got.bytes != listed.bytes {
            return Err(format!(
                "{}: its SHA-256 does not match the manifest (the file was changed)",
                listed.name
            )
            .into());
        }
    }
    if let Some(extra) = read
        .keys()
        .find(|name| !manifest.files.iter().any(|f| &f.name == *name))
    {
        return Err(format!("{extra}: in the archive but not in the manifest").into());
    }
    // 3. The chain segment: links and hashes, from the manifest's start to its end.
    match (&manifest.chain, chain.rows) {
        (None, 0) => {}
        (None, _) => return Err("chain.jsonl has rows but the manifest lists no chain".into()),
        (Some(_), 0) => return Err("chain.jsonl: the manifest lists rows but it has none".into()),
        (Some(info), _) => {
            if let Some((seq, why)) = &chain.problem {
                return Err(format!("chain.jsonl: row {seq}: {why}").into());
            }
            if chain.first_seq != info.first_seq
                || chain.last_seq != info.last_seq
                || chain.rows != info.rows
            {
                return Err(format!(
                    "chain.jsonl: holds rows {} to {} but the manifest says {} to {}",
                    chain.first_seq, chain.last_seq, info.first_seq, info.last_seq
                )
                .into());
            }
            if chain.prev_hash != info.prev_hash || chain.last_hash != info.last_hash {
                return Err(
                    "chain.jsonl: its first link or last hash differs from the manifest".into(),
                );
            }
        }
    }
    // 4. Every policy the segment's rows name is listed (bundles made before policies were
    //    bundled have no policies.jsonl; its absence from the manifest was checked above).
    if let Some(listed) = &listed_policies {
        let mut missing: Vec<&String> = named_policies.difference(listed).collect();
        missing.sort();
        if let Some(hash) = missing.first() {
            return Err(format!(
                "policies.jsonl: policy {hash}, which rows of the chain name, is not listed"
            )
            .into());
        }
    }
    // 5. The filtered events are rows of that segment, as many as the manifest says.
    if let Some((seq, _)) = events.iter().find(|(_, hash)| !chain_hashes.contains(hash)) {
        return Err(format!("events.jsonl: row {seq} is not in the chain segment").into());
    }
    if event_rows != manifest.events {
        return Err(format!(
            "events.jsonl: {event_rows} rows but the manifest says {}",
            manifest.events
        )
        .into());
    }
    if let Some(parsed) = csv_rows {
        let csv_rows = parsed?;
        if csv_rows != manifest.events {
            return Err(format!(
                "events.csv: {csv_rows} rows but the manifest says {}",
                manifest.events
            )
            .into());
        }
    }
    Ok(Verified {
        manifest,
        trusted_key: key.is_some(),
    })
}
