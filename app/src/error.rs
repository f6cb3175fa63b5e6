//! The error type that crosses the wire between the portal's server functions and the browser.
//!
//! Internal details are logged on the server and never sent: `Internal` carries no message.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A field that failed validation, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// What a portal request can fail with, as the browser sees it.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum AppError {
    #[error("sign-in required")]
    Unauthenticated,
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },
    #[error("not found")]
    NotFound,
    #[error("invalid input: {}", describe(.fields))]
    Invalid { fields: Vec<FieldError> },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("internal error")]
    Internal,
}

fn describe(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_leak_nothing() {
        assert_eq!(AppError::Internal.to_string(), "internal error");
        let invalid = AppError::Invalid {
            fields: vec![FieldError {
                field: "reason".into(),
                message: "required for a denial".into(),
            }],
        };
        assert_eq!(
            invalid.to_string(),
            "invalid input: reason: required for a denial"
        );
    }
}
