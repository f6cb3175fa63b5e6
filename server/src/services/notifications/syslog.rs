//! RFC 5424 syslog messages, and a client that sends them over UDP (one datagram each), TCP or
//! TLS (octet-counted frames, RFC 6587 / RFC 5425).

use super::IntegrationError;
pub use crate::config::values::{parse_target, Target, Transport};
use crate::services::exports::rfc3339;
use crate::store::{AuditAction, AuditRecord};
use std::io;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// The private enterprise number in our structured data's SD-ID (RFC 5612's number reserved for
/// documentation and examples; collectors key on the whole `countersign@32473`).
const SD_ID: &str = "countersign@32473";
/// Facility 13: log audit.
const FACILITY: u8 = 13;
/// Longest UDP datagram sent; longer messages are cut (TCP and TLS carry any length).
const MAX_DATAGRAM: usize = 8_192;
/// How long connecting (with the TLS handshake) or sending one batch may take: a collector that
/// stops reading must not stall the feed for good.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Syslog severity for a row: warnings for denials and failed runs, notices for requests that
/// wait for approval, informational otherwise.
fn severity(row: &AuditRecord) -> u8 {
    let e = &row.event;
    let failed = matches!(
        e.execution_status.as_deref(),
        Some("failure" | "failed" | "timeout")
    );
    if e.action() == Some(AuditAction::Deny) || failed {
        4
    } else if e.action() == Some(AuditAction::RequireApproval) {
        5
    } else {
        6
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped.
fn sd_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() {
        "-".into()
    } else {
        field
    }
}

/// One audit row as an RFC 5424 message whose MSG is `body` (JSON or CEF).
pub fn message(row: &AuditRecord, hostname: &str, pid: u32, body: &str) -> String {
    let e = &row.event;
    let mut sd = format!(
        "[{SD_ID} seq=\"{}\" id=\"{}\" action=\"{}\" risk=\"{}\" caller=\"{}\" tool=\"{}\" operation=\"{}\"",
        row.seq,
        sd_escape(&row.id),
        sd_escape(&e.decision_action),
        sd_escape(&e.risk_level),
        sd_escape(&e.caller_id),
        sd_escape(&e.tool),
        sd_escape(&e.operation),
    );
    if let Some(job) = &e.job_id {
        sd.push_str(&format!(" job=\"{}\"", sd_escape(job)));
    }
    sd.push_str(&format!(" row_hash=\"{}\"]", sd_escape(&row.row_hash)));
    format!(
        "<{}>1 {} {} countersign {pid} {} {sd} {body}",
        u16::from(FACILITY) * 8 + u16::from(severity(row)),
        rfc3339(e.timestamp),
        header_field(hostname, 255),
        header_field(e.kind.as_str(), 32),
    )
}

enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Sends messages to one collector, reconnecting after a failure.
pub struct Client {
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    connection: Option<Connection>,
}

impl Client {
    /// A client for `target`; TLS trusts the CA certificates in `ca_file` (PEM) or, without
    /// one, the system's.
    pub fn new(
        target: Target,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Client, IntegrationError> {
        let tls = match target.transport {
            Transport::Tls => Some(tls_connector(ca_file)?),
            _ => None,
        };
        Ok(Client {
            target,
            tls,
            connection: None,
        })
    }

    async fn connect(&self) -> io::Result<Connection> {
        let address = (self.target.host.as_str(), self.target.port);
        match self.target.transport {
            Transport::Udp => {
                let local = if self.target.host.contains(':') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(address).await?;
                Ok(Connection::Udp(socket))
            }
            Transport::Tcp => Ok(Connection::Tcp(TcpStream::connect(address).await?)),
            Transport::Tls => {
                let connector = self
                    .tls
                    .clone()
                    .ok_or_else(|| io::Error::other("TLS is not set up"))?;
                let name = rustls::pki_types::ServerName::try_from(self.target.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let stream = TcpStream::connect(address).await?;
                Ok(Connection::Tls(Box::new(
                    connector.connect(name, stream).await?,
                )))
            }
        }
    }

    /// Send `messages` in order; an error drops the connection (the next call reconnects) and
    /// the caller sends the batch again.
    pub async fn send(&mut self, messages: &[String]) -> io::Result<()> {
        let result = match tokio::time::timeout(IO_TIMEOUT, self.try_send(messages)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the collector did not take the batch within {IO_TIMEOUT:?}"),
            )),
        };
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn try_send(&mut self, messages: &[String]) -> io::Result<()> {
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(io::Error::other("not connected"));
        };
        match connection {
            Connection::Udp(socket) => {
                for m in messages {
                    let bytes = m.as_bytes();
                    socket.send(&bytes[..bytes.len().min(MAX_DATAGRAM)]).await?;
                }
                Ok(())
            }
            Connection::Tcp(stream) => write_frames(stream, messages).await,
            Connection::Tls(stream) => write_frames(stream.as_mut(), messages).await,
        }
    }
}

/// Octet counting: `LENGTH SP MESSAGE` per message.
async fn write_frames<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    messages: &[String],
) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(messages.iter().map(|m| m.len() + 8).sum());
    for m in messages {
        buffer.extend_from_slice(format!("{} ", m.len()).as_bytes());
        buffer.extend_from_slice(m.as_bytes());
    }
    out.write_all(&buffer).await?;
    out.flush().await
}

fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, IntegrationError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("siem_syslog_ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("siem_syslog_ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("siem_syslog_ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system certificate rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to check the syslog collector's certificate with".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventKind, NewAuditEvent, Risk};

    #[test]
    fn targets_parse_with_default_ports() {
        assert_eq!(
            parse_target("udp://logs.example").ok(),
            Some(Target {
                transport: Transport::Udp,
                host: "logs.example".into(),
                port: 514
            })
        );
        assert_eq!(
            parse_target("tls://10.0.0.5").map(|t| t.port).ok(),
            Some(6514)
        );
        assert_eq!(
            parse_target("tcp://[::1]:1601").map(|t| t.host).ok(),
            Some("::1".into())
        );
        assert!(parse_target("http://logs.example").is_err());
    }

    #[test]
    fn messages_follow_rfc_5424() {
        let mut event = NewAuditEvent::new(
            EventKind::Decision,
            "it-mcp \"bot\"",
            "ssh-exec",
            "executeCommand",
            AuditAction::Deny,
            "dangerous argument",
            Risk::High,
        );
        event.timestamp = crate::store::parse_ts("2026-12-02 10:00:00.250Z").expect("time");
        let row = AuditRecord {
            id: "a]b".into(),
            seq: 42,
            event,
            prev_hash: "0".repeat(64),
            row_hash: "f".repeat(64),
        };
        let m = message(&row, "host one", 7, "{}");
        assert!(
            m.starts_with("<108>1 2026-12-02T10:00:00.250Z hostone countersign 7 decision "),
            "{m}"
        );
        assert!(m.contains("seq=\"42\" id=\"a\\]b\""), "{m}");
        assert!(m.contains("caller=\"it-mcp \\\"bot\\\"\""), "{m}");
        assert!(m.ends_with("] {}"), "{m}");
    }
}
