//! Human duration strings in config: `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`.

use std::fmt;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A `std::time::Duration` written as a string with a unit.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub const fn secs(secs: u64) -> ConfigDuration {
        ConfigDuration(Duration::from_secs(secs))
    }

    pub fn parse(text: &str) -> Result<ConfigDuration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration: write a number and a unit, like \"250ms\", \"30s\", \"5m\", \"1h\" or \"1d\""))?;
        let unit_secs = match unit.trim() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 7.0 * 86400.0,
            other => {
                return Err(format!(
                    "`{text}` has an unknown unit `{other}`: use ms, s, m, h, d or w"
                ))
            }
        };
        Duration::try_from_secs_f64(value * unit_secs)
            .map(ConfigDuration)
            .map_err(|_| format!("`{text}` is out of range"))
    }
}

impl fmt::Debug for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ConfigDuration::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let ms = |s: &str| ConfigDuration::parse(s).map(|d| d.0.as_millis());
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("1.5m"), Ok(90_000));
        assert_eq!(ms("1d"), Ok(86_400_000));
        assert!(ms("30").is_err());
        assert!(ms("ten s").is_err());
        assert!(ms("3 parsecs").is_err());
    }
}
