//! Bearer tokens from the identity provider (Keycloak): JWT verification against the realm's
//! keys, and the mapping from Keycloak's claims to Countersign's roles and capabilities.
//!
//! Only asymmetric algorithms are accepted (RS256, PS256, ES256), chosen by the key, never by
//! the token alone: `alg: none` and HMAC tokens signed with a public key are refused. The
//! issuer must match exactly; the audience (or, for Keycloak client-credentials tokens without
//! an audience mapper, `azp`) must name one of ours; `exp` and `nbf` are checked with leeway.

use jsonwebtoken::{
    decode, decode_header,
    jwk::{AlgorithmParameters, JwkSet},
    Algorithm, DecodingKey, Validation,
};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};

/// Algorithms a token may use.
pub const ALLOWED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("the token names no key (kid)")]
    NoKeyId,
    /// The caller should refresh the key set once and retry.
    #[error("unknown signing key {0}")]
    UnknownKey(String),
    #[error("the key does not fit the token's algorithm")]
    KeyMismatch,
    #[error("bad signature")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("the token is not meant for Countersign (audience)")]
    Audience,
}

/// The claims Countersign reads (Keycloak's names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: Option<String>,
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub aud: Audience,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub realm_access: Option<RoleList>,
    #[serde(default)]
    pub resource_access: HashMap<String, RoleList>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RoleList {
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `aud` is a string or a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// Verifies tokens of one issuer with its current key set.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuer: String,
    audiences: Vec<String>,
    keys: JwkSet,
}

impl Verifier {
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>, keys: JwkSet) -> Verifier {
        Verifier {
            issuer: issuer.into(),
            audiences,
            keys,
        }
    }

    /// Replace the key set (after the provider rotated its keys).
    pub fn set_keys(&mut self, keys: JwkSet) {
        self.keys = keys;
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !ALLOWED.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let jwk = self
            .keys
            .find(&kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        // The key decides what the algorithm may be: an EC key only verifies ES256, an RSA key
        // only RS256/PS256, and a key that declares its algorithm only that one.
        let fits = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(_) => header.alg == Algorithm::ES256,
            AlgorithmParameters::RSA(_) => {
                matches!(header.alg, Algorithm::RS256 | Algorithm::PS256)
            }
            _ => false,
        };
        let declared = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
        if !fits || declared.is_some_and(|d| d != format!("{:?}", header.alg)) {
            return Err(TokenError::KeyMismatch);
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::KeyMismatch)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked below, with Keycloak's `azp` fallback
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data = decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm => TokenError::KeyMismatch,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        let audience_ok = self
            .audiences
            .iter()
            .any(|a| claims.aud.contains(a) || claims.azp.as_deref() == Some(a.as_str()));
        if !audience_ok {
            return Err(TokenError::Audience);
        }
        Ok(claims)
    }
}

/// How Keycloak roles become Countersign's.
#[derive(Debug, Clone)]
pub struct RoleMapping {
    /// The portal's client id in the realm (for `resource_access.<client>.roles`).
    pub client_id: String,
    /// Provider role → portal role (viewer, approver, auditor, admin). By default each portal
    /// role's own name maps to it.
    pub roles: HashMap<String, String>,
    /// Capabilities that exist (the policy's); a role with a capability's name grants it.
    pub capabilities: BTreeSet<String>,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The person's user name, or the client id for a machine (service-account) token.
    pub id: String,
    pub display_name: String,
    pub is_service: bool,
    pub roles: BTreeSet<String>,
    pub capabilities: BTreeSet<String>,
}

/// Keycloak's built-in roles that mean nothing to Countersign.
fn is_builtin(role: &str) -> bool {
    role.starts_with("default-roles-") || role == "offline_access" || role == "uma_authorization"
}

pub fn identity(claims: &Claims, mapping: &RoleMapping) -> Identity {
    let mut raw: BTreeSet<String> = claims
        .realm_access
        .iter()
        .flat_map(|r| r.roles.iter().cloned())
        .collect();
    if let Some(client) = claims.resource_access.get(&mapping.client_id) {
        raw.extend(client.roles.iter().cloned());
    }
    raw.retain(|r| !is_builtin(r));
    let roles = raw
        .iter()
        .filter_map(|r| match mapping.roles.get(r) {
            Some(mapped) => Some(mapped.clone()),
            None => super::accounts::ROLES
                .contains(&r.as_str())
                .then(|| r.clone()),
        })
        .collect();
    let capabilities = raw
        .iter()
        .filter(|r| mapping.capabilities.contains(*r))
        .cloned()
        .collect();
    // Keycloak's service accounts: `sub` is a UUID and the user name is synthetic
    // (`service-account-<client>`); the client is who calls. RFC 9068 access tokens carry
    // `client_id` for people too, so that claim alone means a service only when the token has
    // no person in it (no user name, or `sub` is the client itself).
    let keycloak_service = claims
        .preferred_username
        .as_deref()
        .is_some_and(|u| u.starts_with("service-account-"));
    let service_client = if keycloak_service {
        claims.client_id.clone().or_else(|| claims.azp.clone())
    } else {
        claims.client_id.clone().filter(|client| {
            claims.preferred_username.is_none() || claims.sub.as_deref() == Some(client.as_str())
        })
    };
    match service_client {
        Some(client) => Identity {
            display_name: client.clone(),
            id: client,
            is_service: true,
            roles,
            capabilities,
        },
        None => {
            let id = claims
                .preferred_username
                .clone()
                .or_else(|| claims.sub.clone())
                .unwrap_or_default();
            let display_name = claims.name.clone().unwrap_or_else(|| id.clone());
            Identity {
                id,
                display_name,
                is_service: false,
                roles,
                capabilities,
            }
        }
    }
}
