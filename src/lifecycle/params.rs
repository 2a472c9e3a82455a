//! A kind's own request fields as one serde type (`scale_out::ScaleOutParams`, …): parsed once
//! at admission, field by field so every problem names its field, and described by the same
//! type in the OpenAPI document (`ToSchema`). The value types here (`Flag`, `HumanDuration`,
//! `Parallel`, `Percent`, `SubdomainName`) carry the checks and the 422 texts the kinds share,
//! and a schema that says exactly what they accept.
//!
//! The stored params keep the JSON the client sent: parsing checks it, it does not rewrite it.

use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::engine::request::FieldError;

/// A kind's own request fields, as a type.
pub trait KindParams: DeserializeOwned + ToSchema + 'static {
    /// The top-level request fields the type reads (its serde field names), which `prepare`
    /// moves into `params` and an unknown-field error lists.
    const FIELDS: &'static [&'static str];
}

/// Parses a kind's own fields out of a job's params, each problem naming its field.
pub type CheckFn = fn(&Map<String, Value>) -> Result<(), Vec<FieldError>>;

/// What the registry knows of a kind's own fields, without naming their type.
#[derive(Clone, Copy)]
pub struct OwnFields {
    pub fields: &'static [&'static str],
    /// The type's schema: an object with one property per field.
    pub schema: fn() -> RefOr<Schema>,
    /// Parses the fields out of a job's params, each problem naming its field.
    pub check: CheckFn,
}

impl OwnFields {
    pub fn of<T: KindParams>() -> OwnFields {
        OwnFields {
            fields: T::FIELDS,
            schema: <T as PartialSchema>::schema,
            check: |m| parse::<T>(m).map(|_| ()),
        }
    }

    /// A kind with no fields of its own.
    pub fn none() -> OwnFields {
        OwnFields::of::<NoParams>()
    }
}

/// The own fields of a kind that has none.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NoParams {}

impl KindParams for NoParams {
    const FIELDS: &'static [&'static str] = &[];
}

/// Parses a kind's own fields out of `params` (other keys are the engine's or the
/// workflow's and are left alone). Each field is read on its own first, so a problem names
/// the field it is in and every problem is reported at once.
pub fn parse<T: KindParams>(params: &Map<String, Value>) -> Result<T, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut own = Map::new();
    for f in T::FIELDS {
        let Some(v) = params.get(*f) else { continue };
        let one = Map::from_iter([(f.to_string(), v.clone())]);
        match serde_json::from_value::<T>(Value::Object(one)) {
            Ok(_) => {
                own.insert(f.to_string(), v.clone());
            }
            Err(e) => errs.push(FieldError::new(*f, e.to_string())),
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    serde_json::from_value(Value::Object(own))
        .map_err(|e| vec![FieldError::new("params", e.to_string())])
}

/// Reads a kind's own fields from a stored job's params (checked when it was admitted).
pub fn read<T: KindParams>(params: &Value) -> Result<T, Vec<FieldError>> {
    match params {
        Value::Object(m) => parse(m),
        _ => parse(&Map::new()),
    }
}

/// Reads a kind's own fields in a step: a stored job whose params no longer read is the
/// job's spec at fault, and says which field.
pub fn of_job<T: KindParams>(params: &Value) -> Result<T, crate::engine::step::StepError> {
    read(params).map_err(|errs| {
        let said: Vec<String> = errs
            .iter()
            .map(|e| format!("params.{}: {}", e.field, e.message))
            .collect();
        crate::engine::step::StepError::new(
            crate::model::FailureClass::InvalidSpec,
            said.join("; "),
        )
    })
}

/// The durations `crate::duration::parse` reads (`1h30m`), as a pattern.
pub const DURATION_PATTERN: &str = r"^\s*([0-9]+(ms|s|m|h|d))+\s*$";

/// A human duration (`15m`, `1h30m`), at most ten years.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => match crate::duration::parse(&s) {
                Ok(v) if v <= crate::duration::MAX => Ok(HumanDuration(v)),
                Ok(_) => Err(D::Error::custom("must be at most 3650d")),
                Err(e) => Err(D::Error::custom(e)),
            },
            _ => Err(D::Error::custom("must be a duration such as `15m`")),
        }
    }
}

impl PartialSchema for HumanDuration {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(DURATION_PATTERN))
            .description(Some(
                "A duration such as `15m` or `1h30m` (units ms, s, m, h, d), at most 3650d.",
            ))
            .into()
    }
}
impl ToSchema for HumanDuration {}

/// `true` or `false`, and nothing that merely looks like one.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Flag(b)),
            _ => Err(D::Error::custom("must be true or false")),
        }
    }
}

impl PartialSchema for Flag {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Boolean).into()
    }
}
impl ToSchema for Flag {}

/// How many nodes at once: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parallel(pub u32);

impl<'de> Deserialize<'de> for Parallel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)?.as_u64() {
            Some(n) if (1..=100).contains(&n) => Ok(Parallel(n as u32)),
            _ => Err(D::Error::custom("must be an integer from 1 to 100")),
        }
    }
}

impl PartialSchema for Parallel {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(100))
            .into()
    }
}
impl ToSchema for Parallel {}

/// A share of the cluster, as a fraction: written `"40%"`, `"40"` or `40`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

/// `0` to `100`, optionally with decimals and a `%`.
pub const PERCENT_PATTERN: &str = r"^\s*0*(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)\s*%?\s*$";

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wrong = || D::Error::custom("must be a percentage from 0% to 100%");
        let n = match Value::deserialize(d)? {
            Value::String(s) => {
                let re = regex::Regex::new(PERCENT_PATTERN).expect("a valid pattern");
                if !re.is_match(&s) {
                    return Err(wrong());
                }
                let digits = s.trim().trim_end_matches('%').trim();
                digits.parse::<f64>().map_err(|_| wrong())?
            }
            Value::Number(n) => n.as_f64().ok_or_else(wrong)?,
            _ => return Err(wrong()),
        };
        if (0.0..=100.0).contains(&n) {
            Ok(Percent(n / 100.0))
        } else {
            Err(wrong())
        }
    }
}

impl PartialSchema for Percent {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(PERCENT_PATTERN)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0))
                    .maximum(Some(100)),
            )
            .description(Some("A percentage from 0% to 100%: `\"40%\"` or `40`."))
            .into()
    }
}
impl ToSchema for Percent {}

/// A DNS-1123 subdomain, as Kubernetes names Secrets.
pub const SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The name of a Kubernetes object that takes DNS-1123 subdomains (a Secret).
#[derive(Debug, Clone, PartialEq)]
pub struct SubdomainName(pub String);

impl<'de> Deserialize<'de> for SubdomainName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => crate::model::check_dns_subdomain(&s)
                .map(|()| SubdomainName(s))
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom("must be a string")),
        }
    }
}

impl PartialSchema for SubdomainName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(253))
            .pattern(Some(SUBDOMAIN_PATTERN))
            .into()
    }
}
impl ToSchema for SubdomainName {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, ToSchema)]
    struct T {
        #[schema(inline)]
        wait: Option<HumanDuration>,
        #[schema(inline)]
        on: Option<Flag>,
        #[schema(inline)]
        share: Option<Percent>,
        #[schema(inline)]
        at_once: Option<Parallel>,
    }
    impl KindParams for T {
        const FIELDS: &'static [&'static str] = &["wait", "on", "share", "at_once"];
    }

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_wrong_field_is_named_with_the_kinds_text() {
        let errs = parse::<T>(&m(
            json!({"wait": 5, "on": "yes", "share": "120%", "at_once": 0, "other": 1}),
        ))
        .unwrap_err();
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("wait", "must be a duration such as `15m`"),
                ("on", "must be true or false"),
                ("share", "must be a percentage from 0% to 100%"),
                ("at_once", "must be an integer from 1 to 100"),
            ]
        );
        let e = parse::<T>(&m(json!({"wait": "5y"}))).unwrap_err();
        assert_eq!(e[0].message, "`5y`: unknown unit `y` (ms, s, m, h, d)");
        let e = parse::<T>(&m(json!({"wait": "3651d"}))).unwrap_err();
        assert_eq!(e[0].message, "must be at most 3650d");
    }

    #[test]
    fn good_fields_are_typed_and_absent_or_null_ones_are_none() {
        let t = parse::<T>(&m(
            json!({"wait": "1h30m", "on": true, "share": "25%", "at_once": 3, "named_machines": []}),
        ))
        .unwrap();
        assert_eq!(t.wait, Some(HumanDuration(Duration::from_secs(5400))));
        assert_eq!(t.on, Some(Flag(true)));
        assert_eq!(t.share, Some(Percent(0.25)));
        assert_eq!(t.at_once, Some(Parallel(3)));
        let t = parse::<T>(&m(json!({"wait": null}))).unwrap();
        assert!(t.wait.is_none() && t.on.is_none());
    }

    /// The schema's pattern and the parser agree on what a percentage is.
    #[test]
    fn the_percent_pattern_and_parser_agree() {
        let re = regex::Regex::new(PERCENT_PATTERN).unwrap();
        for (s, ok) in [
            ("40%", true),
            ("40", true),
            ("100%", true),
            ("0.5 %", true),
            ("100.5%", false),
            ("101", false),
            ("1e1", false),
            ("-5", false),
            ("inf", false),
            ("", false),
        ] {
            assert_eq!(re.is_match(s), ok, "{s}");
            let parsed = serde_json::from_value::<Percent>(json!(s));
            assert_eq!(parsed.is_ok(), ok, "{s}");
        }
    }
}
