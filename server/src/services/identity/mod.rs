//! Who people and callers are: local accounts, API tokens, bearer tokens from the identity
//! provider, and the provider's sign-in flow.

pub mod accounts;
pub mod api_tokens;
pub mod oidc;
pub mod tokens;

/// Compare two secrets (hashes, `state` values) in time that depends only on their length.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
