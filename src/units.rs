//! Values of settings written with a unit or as a word: durations (`30s`, `10m`, `2d`), and
//! keys that take a number or a word (`jobs: 2` or `jobs: auto`). Every settings block that has
//! such a key reads it through here, so they all accept the same spellings.

use std::time::Duration;

use serde::Deserialize;

/// Parses `250ms`, `30s`, `30m`, `26h`, `2d`, `1w` or plain seconds; the error says what is
/// wrong with `text`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("`{text}`: expected e.g. 26h, 2d, 90m, 30s"))?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => {
            return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m, h, d or w)"));
        }
    };
    Ok(Duration::from_millis(n.saturating_mul(millis)))
}

/// A config value written as a number or as a word (`90` or `10m`; `2` or `auto`), for keys
/// that take either.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrText<N> {
    Number(N),
    Text(String),
}

/// A duration in the configuration: seconds as a number, or text like `90s`, `10m`, `12h`, `2d`
/// (for `#[serde(deserialize_with = "...")]`).
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    match NumberOrText::<u64>::deserialize(d)? {
        NumberOrText::Number(n) => Ok(Duration::from_secs(n)),
        NumberOrText::Text(t) => {
            parse_duration(&t).map_err(|_| serde::de::Error::custom(format!("`{t}` is not a duration: use e.g. 30s, 10m, 12h or 2d")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        for (text, secs) in [("90", 90), ("30m", 1800), ("26h", 93600), ("2d", 172800), ("1w", 604800)] {
            assert_eq!(parse_duration(text).unwrap().as_secs(), secs, "{text}");
        }
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert!(parse_duration("2x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("h").is_err());
    }
}
