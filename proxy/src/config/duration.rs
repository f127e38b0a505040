//! Durations as written in `routes.yaml`: `250ms`, `5s`, `1m`, `1h`.

use std::time::Duration;

/// Parses a duration such as `250ms`, `5s`, `1m` or `1h30m`. A bare number is refused, so a
/// forgotten unit cannot turn seconds into milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() || text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration `{text}`: expected a number with a unit, like 250ms, 5s or 1m"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration `{text}`: {e} (expected e.g. 250ms, 5s, 1m)"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    }

    #[test]
    fn bare_numbers_and_garbage_are_refused() {
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
