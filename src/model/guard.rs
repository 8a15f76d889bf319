//! The traffic guard: what planrun watches while a rollout runs, and when it halts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::duration::HumanDuration;

/// What the guard watches from the pre-flight to the end of the run: the service as
/// users reach it (`http`), and the balancer's per-node responses (`balancer`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// # Probe URL
    ///
    /// The service as users reach it, through the balancer: planrun sends a `GET` every
    /// `interval` from the pre-flight to the end of the run. A probe fails on an answer
    /// that is not 2xx, a timeout or a connection error. A failed probe before the first
    /// batch refuses the run: the service is already failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"https://shop.example.com/health")]
    pub http: Option<String>,

    /// # Probe interval
    ///
    /// How often the guard probes `http` and reads the `balancer`'s counters. Defaults
    /// to `200ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,

    /// # Probe timeout
    ///
    /// A probe without an answer within this time has failed. Defaults to `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,

    /// # Failed probes allowed
    ///
    /// The run halts once more probes than this have failed, counted over the run: no new
    /// batch starts, the hosts in their window finish it. Defaults to `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = 0)]
    pub max_failed: Option<u32>,

    /// # Failed probe rate allowed
    ///
    /// Instead of `max_failed`: the run halts once the failed probes are more than this
    /// share of the probes sent, such as `"1%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"1%")]
    pub max_failed_rate: Option<Rate>,

    /// # Balancer to analyse
    ///
    /// A balancer (of kind `haproxy`) whose per-server counters (`hrsp_5xx` among the
    /// `hrsp_*` of `show stat`) planrun compares: the error rate of the nodes rolled so
    /// far, since each came back, against the rest of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"edge")]
    pub balancer: Option<String>,

    /// # Error rate allowed
    ///
    /// With `balancer`: the run halts once the rolled nodes' share of 5xx answers is more
    /// than the rest of the pool's plus this. Defaults to `"1%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"1%")]
    pub max_error_rate: Option<Rate>,
}

/// A share written as a percentage: `"1%"`, `"0.5%"`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate(pub f64);

impl Rate {
    /// As a fraction: `"1%"` is 0.01.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = || format!("`{s}` is not a rate: write a percentage such as `1%` or `0.5%`");
        let number = s.trim().strip_suffix('%').ok_or_else(invalid)?;
        let value: f64 = number.trim().parse().map_err(|_| invalid())?;
        if !(0.0..=100.0).contains(&value) {
            return Err(format!("`{s}` is not a rate: a percentage is from 0% to 100%"));
        }
        Ok(Rate(value))
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What editors say about a rate that is not a percentage.
const RATE_MESSAGE: &str = "a percentage, such as `1%` or `0.5%`";

impl JsonSchema for Rate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string"],
            "pattern": "^\\s*(100(\\.0+)?|[0-9]{1,2}(\\.[0-9]+)?)\\s*%\\s*$",
            "description": "A percentage from 0% to 100%: `1%`, `0.5%`.",
            "examples": ["1%"],
            "errorMessage": RATE_MESSAGE,
            "patternErrorMessage": RATE_MESSAGE
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Rate;

    #[test]
    fn rates_are_percentages() {
        assert_eq!("1%".parse::<Rate>().unwrap().fraction(), 0.01);
        assert_eq!(" 0.5 % ".parse::<Rate>().unwrap().0, 0.5);
        assert!("1".parse::<Rate>().is_err());
        assert!("101%".parse::<Rate>().is_err());
        assert!("x%".parse::<Rate>().is_err());
    }
}
