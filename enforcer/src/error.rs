//! Why a policy (or a command catalogue) file was refused, with the place in the file.

use std::fmt;

/// Why a policy file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the error concerns the file as a whole.
    pub line: usize,
    pub column: usize,
    /// Dotted path of the setting at fault, when known (`tools.ssh-exec.operations.run.risk`).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// A TOML syntax or shape error in `file`, at its line and column.
pub(crate) fn toml_error(file: &str, source: &str, e: &toml::de::Error) -> PolicyError {
    let (line, column) = e.span().map_or((0, 0), |span| line_col(source, span.start));
    PolicyError {
        file: file.to_string(),
        line,
        column,
        field: None,
        message: e.message().trim().to_string(),
    }
}

pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
