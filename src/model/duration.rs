//! Durations as operators write them: `90s`, `2m`, `1h 30m`, `500ms`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration written with a unit. A bare number is refused because `90` could mean
/// seconds or milliseconds, and a rollout that waits 90 ms instead of 90 s takes sites
/// down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// The schema's pattern accepts what `humantime` parses for the units operators use;
/// the parser decides, the pattern only lets editors flag a missing unit early.
/// The longest duration a plan may write: 30 days. Anything longer is a typo, and a
/// duration far longer cannot even be added to a clock (`10000000000000000000s`).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

pub const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]+)?\s*(ms|msec|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days)\s*)+$";

/// What editors say about text that is not a duration.
pub const DURATION_MESSAGE: &str = "a duration with a unit, like `90s` or `2m`";
/// What editors say about a number, or anything else, where a duration belongs.
const NOT_TEXT_MESSAGE: &str =
    "a duration with a unit, like `90s` or `2m`: a bare number could mean seconds or milliseconds";

impl HumanDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim()).map(HumanDuration).map_err(|e| {
            format!("`{s}` is not a duration ({e}): write a number with a unit, such as `90s`, `2m` or `500ms`")
        })
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // `errorMessage` and `patternErrorMessage` are yaml-language-server's keywords for a
        // message of our own instead of `Incorrect type. Expected "string | null"`. The type
        // is a one-element list because the server rewrites a single type's mismatch into
        // its own wording when it merges the branches of an optional field.
        schemars::json_schema!({
            "type": ["string"],
            "pattern": DURATION_PATTERN,
            "description": "A duration with a unit: `500ms`, `90s`, `2m`, `1h 30m`.",
            "examples": ["90s", "2m"],
            "errorMessage": NOT_TEXT_MESSAGE,
            "patternErrorMessage": DURATION_MESSAGE
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_operators_write() {
        for (text, secs) in [("90s", 90.0), ("2m", 120.0), ("1h 30m", 5400.0), ("500ms", 0.5), ("1.5s", 1.5)] {
            let d: HumanDuration = text.parse().unwrap();
            assert_eq!(d.0.as_secs_f64(), secs, "{text}");
            assert!(regex_lite_match(text), "pattern refuses {text}");
        }
    }

    #[test]
    fn refuses_a_bare_number() {
        let err = "90".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("with a unit"), "{err}");
    }

    fn regex_lite_match(text: &str) -> bool {
        // The schema's pattern must accept every example above; jsonschema's regex engine
        // is the judge, so ask it.
        let schema = serde_json::json!({ "type": "string", "pattern": DURATION_PATTERN });
        jsonschema::is_valid(&schema, &serde_json::json!(text))
    }
}
