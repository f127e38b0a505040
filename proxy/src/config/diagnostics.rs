//! Problems found in a config, with the position they were found at.

use std::fmt;

use super::yaml::Pos;

/// Whether a problem stops the config from being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The config is rejected.
    Error,
    /// Reported, but the config is used.
    Warning,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub col: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, for a person.
    pub message: String,
}

impl Diagnostic {
    /// An error at `pos`.
    pub fn error(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            line: pos.line,
            col: pos.col,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A warning at `pos`.
    pub fn warning(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(pos, message)
        }
    }

    /// An error about the file as a whole.
    pub fn error_nowhere(message: impl Into<String>) -> Self {
        Diagnostic::error(Pos::default(), message)
    }

    /// Formats the diagnostic as `FILE:LINE:COL: message` (or `FILE: message` without a
    /// position), with `warning: ` before the message of a warning.
    pub fn display<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        struct D<'a>(&'a Diagnostic, &'a str);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let (d, file) = (self.0, self.1);
                if d.line > 0 {
                    write!(f, "{file}:{}:{}: ", d.line, d.col)?;
                } else {
                    write!(f, "{file}: ")?;
                }
                if d.severity == Severity::Warning {
                    f.write_str("warning: ")?;
                }
                f.write_str(&d.message)
            }
        }
        D(self, file)
    }
}
