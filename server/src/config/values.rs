//! Settings read into typed values: the parsers configuration validates with at start-up,
//! kept here so that configuration depends on nothing above it.

use lettre::message::Mailbox;
use std::collections::BTreeSet;
use std::net::IpAddr;

message_error!(
    /// Why a setting's value is not valid.
    InvalidValue
);

/// Reverse proxies whose `X-Forwarded-For` is believed (setting `trusted_proxies`): IP
/// addresses and CIDR ranges. A request from any other peer is taken to come from that peer,
/// whatever it claims, so the header cannot be spoofed past them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<IpRange>,
}

/// One address (a full-length prefix) or CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    fn parse(text: &str) -> Result<IpRange, InvalidValue> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address.trim(), Some(prefix.trim())),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            format!(
                "`{text}` is not an IP address or CIDR range (e.g. 10.0.0.5, 10.0.0.0/8, fd00::/8)"
            )
        })?;
        let max: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        // Addresses are compared in their canonical form (an IPv4-mapped IPv6 peer is its IPv4
        // address), so an IPv4 range written as mapped IPv6 (`::ffff:10.0.0.0/104`) is the IPv4
        // range.
        if let IpAddr::V6(v6) = network {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Ok(IpRange {
                    network: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(IpRange { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                (u32::from(network) & mask) == (u32::from(ip) & mask)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                (u128::from(network) & mask) == (u128::from(ip) & mask)
            }
            _ => false,
        }
    }
}

impl TrustedProxies {
    /// A comma-separated list of IP addresses and CIDR ranges; empty trusts nobody.
    pub fn parse(text: &str) -> Result<TrustedProxies, InvalidValue> {
        let ranges = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(IpRange::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { ranges })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(ip))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// Where the collector listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

/// `udp://HOST[:514]`, `tcp://HOST[:601]` or `tls://HOST[:6514]`.
pub fn parse_target(text: &str) -> Result<Target, InvalidValue> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    let (transport, default_port) = match url.scheme() {
        "udp" => (Transport::Udp, 514),
        "tcp" => (Transport::Tcp, 601),
        "tls" => (Transport::Tls, 6514),
        other => {
            return Err(format!(
                "scheme `{other}`: use udp://, tcp:// or tls:// followed by host[:port]"
            )
            .into())
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL names no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Target {
        transport,
        host,
        port: url.port().unwrap_or(default_port),
    })
}

/// An approver's address and the capabilities they approve for (empty: every job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub mailbox: Mailbox,
    pub capabilities: BTreeSet<String>,
}

impl Recipient {
    /// Whether this person may be asked about a job needing `required`.
    pub fn covers(&self, required: &[String]) -> bool {
        self.capabilities.is_empty() || required.iter().all(|c| self.capabilities.contains(c))
    }
}

/// `ADDRESS` or `ADDRESS:CAP+CAP`, comma-separated (see `notify_email_to`).
pub fn parse_recipients(text: &str) -> Result<Vec<Recipient>, InvalidValue> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (address, caps) = entry.split_once(':').unwrap_or((entry, ""));
            let mailbox: Mailbox = address
                .trim()
                .parse()
                .map_err(|e| format!("`{address}` is not an e-mail address: {e}"))?;
            Ok(Recipient {
                mailbox,
                capabilities: caps
                    .split('+')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// The configured bundle-signing key, from its base64 seed.
pub fn signing_key(text: &str) -> Result<ed25519_dalek::SigningKey, InvalidValue> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "must be base64 (make one with `countersign audit keygen`)".to_string())?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| {
        "must be 32 bytes, base64-encoded (make one with `countersign audit keygen`)"
    })?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}
