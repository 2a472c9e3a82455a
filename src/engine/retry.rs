//! Retry policy: exponential backoff with a cap and jitter, bounded by attempts and/or time.

use std::time::Duration;

use serde::Deserialize;

use crate::duration::{format, serde_human_opt};

/// A policy as written in a workflow file; every field falls back to the workflow's default
/// policy, then to the built-in defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default, with = "serde_human_opt")]
    pub base: Option<Duration>,
    #[serde(default, with = "serde_human_opt")]
    pub cap: Option<Duration>,
    #[serde(default)]
    pub jitter: Option<f64>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// How long a node may keep retrying in one state.
    #[serde(default, with = "serde_human_opt")]
    pub deadline: Option<Duration>,
}

impl RetrySpec {
    /// Fills unset fields from `default`.
    pub fn over(self, default: &RetrySpec) -> RetrySpec {
        RetrySpec {
            base: self.base.or(default.base),
            cap: self.cap.or(default.cap),
            jitter: self.jitter.or(default.jitter),
            max_attempts: self.max_attempts.or(default.max_attempts),
            deadline: self.deadline.or(default.deadline),
        }
    }

    pub fn check(&self) -> Result<(), String> {
        let p = self.policy();
        if p.base > p.cap {
            return Err(format!(
                "base {} is above cap {}",
                format(p.base),
                format(p.cap)
            ));
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            return Err(format!("jitter {} is outside 0..1", p.jitter));
        }
        if p.max_attempts == Some(0) {
            return Err("max_attempts must be at least 1".into());
        }
        Ok(())
    }

    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: self.base.unwrap_or(RetryPolicy::DEFAULT.base),
            cap: self.cap.unwrap_or(RetryPolicy::DEFAULT.cap),
            jitter: self.jitter.unwrap_or(RetryPolicy::DEFAULT.jitter),
            max_attempts: self.max_attempts.or(RetryPolicy::DEFAULT.max_attempts),
            deadline: self.deadline,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Fraction of the delay drawn at random, both ways: 0.2 gives 80%..120%.
    pub jitter: f64,
    pub max_attempts: Option<u32>,
    pub deadline: Option<Duration>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    After(Duration),
    /// The attempt or time budget is spent.
    Exhausted(String),
}

impl RetryPolicy {
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(300),
        jitter: 0.2,
        max_attempts: Some(10),
        deadline: None,
    };

    /// The delay before attempt `failed + 1`, or why there is none. `in_state` is how long
    /// the node has been in this state.
    pub fn decide(&self, failed: u32, in_state: Duration) -> RetryDecision {
        if let Some(max) = self.max_attempts
            && failed >= max
        {
            return RetryDecision::Exhausted(format!("{failed} of {max} attempts failed"));
        }
        let delay = self.delay(failed);
        if let Some(limit) = self.deadline
            && in_state + delay > limit
        {
            return RetryDecision::Exhausted(format!(
                "the next attempt would pass this state's retry deadline of {}",
                format(limit)
            ));
        }
        RetryDecision::After(delay)
    }

    /// `base * 2^(failed-1)`, capped, then jittered.
    pub fn delay(&self, failed: u32) -> Duration {
        let exp = failed.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        raw.mul_f64(factor.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter,
            max_attempts: Some(5),
            deadline: None,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy(0.0);
        let delays: Vec<u128> = (1..=5).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = policy(0.5);
        for _ in 0..200 {
            let d = p.delay(3).as_millis();
            assert!((200..=600).contains(&d), "{d}");
        }
    }

    #[test]
    fn attempts_and_deadline_bound_the_retries() {
        let p = policy(0.0);
        assert_eq!(
            p.decide(4, Duration::ZERO),
            RetryDecision::After(Duration::from_millis(800))
        );
        assert!(
            matches!(p.decide(5, Duration::ZERO), RetryDecision::Exhausted(m) if m.contains("5 of 5"))
        );
        let timed = RetryPolicy {
            deadline: Some(Duration::from_secs(2)),
            max_attempts: None,
            ..p
        };
        assert!(
            matches!(timed.decide(2, Duration::from_millis(1900)), RetryDecision::Exhausted(m) if m.contains("deadline of 2s"))
        );
    }
}
