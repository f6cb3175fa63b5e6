//! The error type that crosses the wire between the portal's server functions and the browser.
//!
//! Its message is the product's sentence, shown as it is: never a framework's words. Internal
//! details are logged on the server and never sent: `Internal` carries no message.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
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
    #[error("sign in to continue")]
    Unauthenticated,
    /// Not allowed; `reason` says why.
    #[error("{reason}")]
    Forbidden { reason: String },
    /// No such thing (or none this person may see).
    #[error("{0}")]
    NotFound(String),
    #[error("{}", describe(.fields))]
    Invalid { fields: Vec<FieldError> },
    /// Not in a state that allows it (a decided request, a lost race).
    #[error("{0}")]
    Conflict(String),
    /// The store or the server could not be reached; trying again may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("something went wrong on the server; try again")]
    Internal,
}

impl AppError {
    /// One field at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> AppError {
        AppError::Invalid {
            fields: vec![FieldError {
                field: field.to_string(),
                message: message.into(),
            }],
        }
    }
}

fn describe(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Failures of the call itself (the network, encoding) in the product's words.
impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(error: ServerFnErrorErr) -> AppError {
        match error {
            ServerFnErrorErr::Request(_) => AppError::Unavailable(
                "Countersign could not be reached; check the connection and try again".into(),
            ),
            ServerFnErrorErr::Args(message) | ServerFnErrorErr::MissingArg(message) => {
                AppError::Invalid {
                    fields: vec![FieldError {
                        field: "form".into(),
                        message,
                    }],
                }
            }
            _ => AppError::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_products_words_and_leak_nothing() {
        assert_eq!(
            AppError::Internal.to_string(),
            "something went wrong on the server; try again"
        );
        assert_eq!(
            AppError::invalid("reason", "required for a denial").to_string(),
            "reason: required for a denial"
        );
        assert_eq!(
            AppError::Forbidden {
                reason: "exports are for auditors and admins".into()
            }
            .to_string(),
            "exports are for auditors and admins"
        );
        let network = AppError::from_server_fn_error(ServerFnErrorErr::Request("refused".into()));
        assert!(!network.to_string().contains("refused"), "{network}");
        assert!(!network.to_string().contains("server function"));
    }
}
