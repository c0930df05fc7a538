//! Errors that name the file, the field and the fix.

use thiserror::Error;

/// Something wrong with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}; fix: {fix}")]
pub struct FieldError {
    /// Where: a path like `spec.rayClusterConfig.workerGroupSpecs[0].groupName`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl FieldError {
    /// A field error from its three parts.
    pub fn new(field: &str, message: &str, fix: &str) -> Self {
        FieldError {
            field: field.to_string(),
            message: message.to_string(),
            fix: fix.to_string(),
        }
    }

    /// The same error with `prefix.` put before its field path.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// Why a manifest file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("{file}: not valid YAML{}: {message}; fix: correct the YAML syntax (indentation, quotes, colons)", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Syntax {
        /// The file (or `-` for standard input).
        file: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A document of the file has a bad field.
    #[error("{file}: {object}: {error}")]
    Field {
        /// The file.
        file: String,
        /// `kind/name` of the object, or `document N` when it has none yet.
        object: String,
        /// What is wrong.
        error: FieldError,
    },
    /// The file holds nothing we can run.
    #[error(
        "{file}: no RayService or RayCluster in the file; fix: give it a document with `apiVersion: ray.io/v1` and `kind: RayService`"
    )]
    Empty {
        /// The file.
        file: String,
    },
}
