//! Configuration errors. Every variant names the offending field path when there is one, so
//! the admin API can answer 400 with it and a log line points at the line to fix.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document parsed but breaks a rule (`tiers[1].endpoints./api/v1/x: must be > 0`).
    /// `path` is "" for whole-document errors.
    #[error("{}", WithPath(path, message))]
    Invalid { path: String, message: String },
    /// YAML/JSON syntax or type errors, with the field path where one is known
    /// (`tiers[0].window_size_seconds: invalid type: string "x", expected u64`).
    #[error("{}", WithPath(path, message))]
    Parse { path: String, message: String },
    /// The configuration file could not be read. `path` is the file path.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The offending field path (`tiers[0].name`); "" for whole-document errors and for
    /// [`ConfigError::Io`], whose path is a file path rather than a field.
    pub fn path(&self) -> &str {
        match self {
            ConfigError::Invalid { path, .. } | ConfigError::Parse { path, .. } => path,
            ConfigError::Io { .. } => "",
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn parse(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Parse {
            path: path.into(),
            message: message.into(),
        }
    }
}

struct WithPath<'a>(&'a str, &'a str);

impl fmt::Display for WithPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(self.1)
        } else {
            write!(f, "{}: {}", self.0, self.1)
        }
    }
}

#[cfg(test)]
mod tests;
