//! Comparing two transcripts: statuses, error bodies (structure and message, IDs masked) and
//! the shapes of documents — key sets and value types, recursively, not values.

use serde_json::Value;

use super::Reply;
use super::stories::{Check, Seen};

/// Every difference found, so one run lists them all.
#[derive(Default)]
pub struct Diffs(Vec<String>);

impl Diffs {
    /// Compares two transcripts step by step (the same story ran on each side).
    pub fn transcripts(&mut self, real: &[Seen], sim: &[Seen]) {
        for r in real {
            match sim.iter().find(|s| s.label == r.label) {
                Some(s) => self.reply(&r.label, &r.check, &r.reply, &s.reply),
                None => self
                    .0
                    .push(format!("{}: the sim's story never got here", r.label)),
            }
        }
        for s in sim
            .iter()
            .filter(|s| !real.iter().any(|r| r.label == s.label))
        {
            self.0.push(format!(
                "{}: the real cloud's story never got here",
                s.label
            ));
        }
    }

    pub fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: the simulator differs from the real cloud in {} place(s):\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }

    fn reply(&mut self, label: &str, check: &Check, real: &Reply, sim: &Reply) {
        // The story's premise: what should work works on the real cloud, what should fail
        // fails there (else two missing answers would agree).
        let real_ok = real.status < 400;
        match check {
            Check::Shape(_) | Check::Same if !real_ok => self.0.push(format!(
                "{label}: the real cloud answered {}, not a success: {}",
                real.status, real.body
            )),
            Check::Error { .. } if real_ok => self.0.push(format!(
                "{label}: the real cloud answered {}, not an error: {}",
                real.status, real.body
            )),
            _ => {}
        }
        if real.status != sim.status {
            self.0.push(format!(
                "{label}: status {} on the real cloud, {} on the sim\n    real: {}\n    sim:  {}",
                real.status, sim.status, real.body, sim.body
            ));
            return;
        }
        match check {
            Check::Shape(ignore) => self.shape(label, "", &real.body, &sim.body, ignore),
            Check::Error { mask_numbers } => {
                self.shape(label, "", &real.body, &sim.body, &[]);
                let (r, s) = (message(&real.body), message(&sim.body));
                let (r, s) = (masked(&r, *mask_numbers), masked(&s, *mask_numbers));
                if r != s {
                    self.0.push(format!(
                        "{label}: the message differs\n    real: {r:?}\n    sim:  {s:?}"
                    ));
                }
            }
            Check::Same => {
                if real.body != sim.body {
                    self.0.push(format!(
                        "{label}: differs\n    real: {}\n    sim:  {}",
                        real.body, sim.body
                    ));
                }
            }
            Check::Status => {}
        }
    }

    /// Key sets and types, recursively. `null` matches any type (a field that may be unset);
    /// of arrays, the first elements are compared. An `ignore` entry is a path that is not
    /// compared (`server.fault.details`, `hypervisors[].cpu_info`), or `map:PATH` for an
    /// object whose keys are data (metadata, addresses), whose values alone are compared.
    fn shape(&mut self, label: &str, path: &str, real: &Value, sim: &Value, ignore: &[&str]) {
        if ignore.contains(&path) {
            return;
        }
        match (real, sim) {
            (Value::Null, _) | (_, Value::Null) => {}
            (Value::Object(a), Value::Object(b)) => {
                if ignore.iter().any(|i| i.strip_prefix("map:") == Some(path)) {
                    if let (Some(x), Some(y)) = (a.values().next(), b.values().next()) {
                        self.shape(label, &format!("{path}{{}}"), x, y, ignore);
                    }
                    return;
                }
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if ignore.contains(&child.as_str()) {
                        continue;
                    }
                    match (a.get(k), b.get(k)) {
                        (Some(x), None) => self.0.push(format!(
                            "{label}: `{child}` ({}) is missing from the sim",
                            kind(x)
                        )),
                        (None, Some(y)) => self.0.push(format!(
                            "{label}: `{child}` ({}) is the sim's invention",
                            kind(y)
                        )),
                        (Some(x), Some(y)) => self.shape(label, &child, x, y, ignore),
                        (None, None) => unreachable!("a key of one of them"),
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                if let (Some(x), Some(y)) = (a.first(), b.first()) {
                    self.shape(label, &format!("{path}[]"), x, y, ignore);
                }
            }
            (x, y) if kind(x) != kind(y) => self.0.push(format!(
                "{label}: `{path}` is {} on the real cloud ({x}), {} on the sim ({y})",
                kind(x),
                kind(y)
            )),
            _ => {}
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The message of an OpenStack error body: `{"<kind>": {"message": …}}` (Nova, Cinder,
/// Keystone, Neutron's `NeutronError`), or the body itself when it is text.
fn message(body: &Value) -> String {
    match body {
        Value::Object(o) => o
            .values()
            .find_map(|inner| inner["message"].as_str())
            .unwrap_or_default()
            .to_string(),
        other => other.to_string(),
    }
}

/// `text` with UUIDs and 32-digit hex IDs as `<id>` (and, when asked, every number as `N`:
/// quota messages name the usage, which differs between the clouds).
pub fn masked(text: &str, numbers: bool) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let hex = word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        let digits = word.chars().filter(|c| c.is_ascii_hexdigit()).count();
        if hex && digits == 32 && (word.len() == 32 || word.len() == 36) {
            out.push_str("<id>");
        } else if numbers && !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
            out.push('N');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[test]
fn ids_and_numbers_are_masked_but_words_are_not() {
    assert_eq!(
        masked(
            "Instance 0d1f5a1e-8f1c-4a4c-9a57-2b8d0f3e6c11 of cb4562cc093f48c5bf42a12a44d25e33",
            false
        ),
        "Instance <id> of <id>"
    );
    assert_eq!(
        masked("Requested 1, but already used 4 of 4 instances", true),
        "Requested N, but already used N of N instances"
    );
    assert_eq!(
        masked("IP 10.6.0.200 deadbeef", false),
        "IP 10.6.0.200 deadbeef"
    );
}
