//! The one place that decides timestamps, so every output is reproducible.
//!
//! Default: `SOURCE_DATE_EPOCH` when set, else 0 (1970-01-01), as ko and
//! kaniko's `--reproducible` do: the same inputs give the same digests
//! whenever and wherever they are built.

#[derive(Debug, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH={0:?} is not a non-negative integer number of seconds")]
/// A `SOURCE_DATE_EPOCH` that is not a non-negative number of seconds;
/// holds what was set.
pub struct EpochError(String);

/// The timestamp outputs carry (`created`, and the clamp for mtimes).
pub fn epoch(explicit: Option<i64>) -> Result<i64, EpochError> {
    if let Some(e) = explicit {
        return Ok(e);
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or(EpochError(v)),
        _ => Ok(0),
    }
}
