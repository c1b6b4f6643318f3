//! A configuration problem, always about one key: what `config` and each section's
//! checks return.

/// A configuration problem, always about one key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read into the schema.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A value was read but breaks a rule.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

pub(crate) fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}
