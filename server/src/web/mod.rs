//! The web edge: sign-in (sessions, the identity provider's redirect, bearer tokens) and the
//! security middleware every request passes.

pub mod auth;
pub mod security;
