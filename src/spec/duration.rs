//! Window lengths written as `30d`, `12h`, `90m`, `45s` or `2w`: whole, positive, unit required.

use serde::{Deserialize, Deserializer, de};
use std::fmt;

/// A positive span of time, held in whole seconds, parsed from `<number><unit>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    seconds: i64,
}

/// The longest window a spec may state: 100 years. Longer is almost certainly a typo.
const MAX_SECONDS: i64 = 100 * 366 * 86_400;

impl Window {
    /// Parses `30d`-style text; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("`{text}` has no unit: write it as e.g. `30d` (units: s, m, h, d, w)")
        })?;
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "`{text}` does not start with a whole number: write it as e.g. `30d`"
            ));
        }
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("`{text}`: the number is too large"))?;
        let per = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => {
                return Err(format!(
                    "`{text}` has unknown unit `{unit}`: use s, m, h, d or w"
                ));
            }
        };
        let seconds = n
            .checked_mul(per)
            .filter(|s| *s <= MAX_SECONDS)
            .ok_or_else(|| format!("`{text}` is longer than 100 years"))?;
        if seconds == 0 {
            return Err(format!("`{text}` is zero: a window must be positive"));
        }
        Ok(Window { seconds })
    }

    pub fn from_seconds(seconds: i64) -> Self {
        Window { seconds }
    }

    pub fn seconds(self) -> i64 {
        self.seconds
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        for (unit, per) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if s % per == 0 {
                return write!(f, "{}{unit}", s / per);
            }
        }
        write!(f, "{s}s")
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Window;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a window such as \"30d\" (a string with a unit)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Window, E> {
                Window::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Window, E> {
                Err(E::custom(format!(
                    "{v} has no unit: write it as a string such as \"{v}d\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Window::parse("30d").unwrap().seconds(), 30 * 86_400);
        assert_eq!(Window::parse("2w").unwrap().seconds(), 14 * 86_400);
        assert_eq!(Window::parse("90m").unwrap().seconds(), 5_400);
        assert_eq!(Window::parse("45s").unwrap().seconds(), 45);
        assert_eq!(Window::parse("30d").unwrap().to_string(), "30d");
    }

    #[test]
    fn rejects_what_a_typo_looks_like() {
        for bad in [
            "30",
            "d",
            "0d",
            "-1d",
            "30 days",
            "1.5d",
            "",
            "999999999999999999w",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
