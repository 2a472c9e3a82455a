//! Human durations (`250ms`, `30s`, `15m`, `6h`, `2d`) as written in workflow files, job
//! requests and CLI flags. One parser, so every surface accepts the same forms.

use std::time::Duration;

/// Parses `<integer><unit>` with unit one of `ms`, `s`, `m`, `h`, `d`; several parts may be
/// joined (`1h30m`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration (expected e.g. 30s, 15m, 2h)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (expected e.g. 30s, 15m, 2h)"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = |per: u64| value.checked_mul(per).map(Duration::from_secs);
        let part = match &rest[..unit_len] {
            "ms" => Some(Duration::from_millis(value)),
            "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            "" => return Err(format!("`{text}` needs a unit (ms, s, m, h, d)")),
            unit => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h, d)")),
        };
        // Checked: a request's `99999999999999999d` is a 422, not an overflow.
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("`{text}`: number too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The longest duration a request may give (ten years): past it, a time is no longer one a
/// timestamp holds (a job's deadline would have no RFC 3339 form).
pub const MAX: Duration = Duration::from_secs(3650 * 86_400);

/// The shortest form `parse` reads back to the same value.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms % 86_400_000 == 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Serde adapter for `Duration` fields written as human durations.
pub mod serde_human {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }
}

/// Serde adapter for `Option<Duration>` fields written as human durations.
pub mod serde_human_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format(*d)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_operators_write() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(format(Duration::from_secs(5400)), "90m");
        assert_eq!(
            parse(&format(Duration::from_millis(1500))).unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_why() {
        assert!(parse("15").unwrap_err().contains("needs a unit"));
        assert!(parse("5y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse("soon").unwrap_err().contains("not a duration"));
        assert!(parse("").is_err());
        assert!(
            parse("99999999999999999d")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse("18446744073709551615s1s")
                .unwrap_err()
                .contains("too large")
        );
    }
}
