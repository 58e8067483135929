//! Reading the configuration document: YAML (file) or JSON (admin PUT body), syntax and types
//! only. Rules are checked by [`RateLimitConfig::validate`].
//!
//! Both formats are deserialised straight into the schema through `serde_path_to_error`, so a
//! type error names its field (`tiers[0].window_size_seconds: invalid type: …`). Going through
//! an untyped value first would lose YAML's typed reading of scalars: `name: 123` or an
//! all-digit API key would become numbers and fail as type errors.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::error::ConfigError;
use super::schema::RateLimitConfig;

/// Largest accepted document, in bytes (1 MiB: room for thousands of API keys). Anything
/// larger is rejected before parsing, so a hostile upload costs no parsing work. HTTP handlers
/// taking a config body may use the same figure as their body limit.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

const EMPTY_DOCUMENT: &str = "configuration document is empty";

/// Parses a YAML document (syntax and types only).
///
/// serde-saphyr's default budget stays in force: at most 64 levels of nesting, 1,000,000
/// parser events, and bounded alias replay, so nesting and alias bombs end in an error rather
/// than a stack overflow or memory blow-up.
pub fn parse_yaml(text: &str) -> Result<RateLimitConfig, ConfigError> {
    check_size(text.len())?;
    let mut options = serde_saphyr::Options::default();
    // Snippets quote the source around the error, and the source may hold secrets (API keys,
    // the HS256 secret); error messages end up in logs and API responses.
    options.with_snippet = false;
    let mut failed_at = None;
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        let mut track = serde_path_to_error::Track::new();
        let result = Option::<RateLimitConfig>::deserialize(
            serde_path_to_error::Deserializer::new(de, &mut track),
        );
        if result.is_err() {
            failed_at = Some(track.path());
        }
        result
    });
    match parsed {
        Ok(Some(config)) => Ok(config),
        Ok(None) => Err(ConfigError::parse("", EMPTY_DOCUMENT)),
        Err(e) => Err(ConfigError::parse(
            failed_at.as_ref().map(field_path).unwrap_or_default(),
            e.to_string(),
        )),
    }
}

/// Parses a JSON document (the body of a config PUT), syntax and types only.
pub fn parse_json(bytes: &[u8]) -> Result<RateLimitConfig, ConfigError> {
    check_size(bytes.len())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::parse("", EMPTY_DOCUMENT));
    }
    // serde_json's own recursion limit (128) turns deep nesting into an error.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Option<RateLimitConfig> = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ConfigError::parse(field_path(e.path()), e.inner().to_string()))?;
    de.end()
        .map_err(|e| ConfigError::parse("", e.to_string()))?;
    parsed.ok_or_else(|| ConfigError::parse("", EMPTY_DOCUMENT))
}

/// Reads and parses a YAML file. Callers validate with [`super::CompiledConfig::compile`].
pub fn load_file(path: &Path) -> Result<RateLimitConfig, ConfigError> {
    parse_yaml_bytes(&read_file(path)?)
}

/// Reads a configuration file (at most [`MAX_CONFIG_BYTES`]) without parsing it, so callers
/// can tell whether its content changed before paying for a parse.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let io_error = |source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    // One byte over the limit is enough to know the file is too large, without reading it all.
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    check_size(bytes.len())?;
    Ok(bytes)
}

/// [`parse_yaml`] on raw file bytes, which must be UTF-8.
pub fn parse_yaml_bytes(bytes: &[u8]) -> Result<RateLimitConfig, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ConfigError::parse(
            "",
            format!(
                "configuration file is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    parse_yaml(text)
}

fn check_size(len: usize) -> Result<(), ConfigError> {
    if len > MAX_CONFIG_BYTES {
        return Err(ConfigError::parse(
            "",
            format!("configuration document is larger than the limit of {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Formats a path as `tiers[1].endpoints./api/v1/x`. `serde_path_to_error` marks segments it
/// could not name as `?` (a duplicate key, for instance, fails before its name is recorded);
/// the path stops before them, at the innermost known field, and the message names the key.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => break,
        }
    }
    out
}

#[cfg(test)]
mod tests;
