//! Call limits the `mcp` layer applies before a tool runs: per-principal token buckets by risk
//! level (`[limits.rate.*]`) and a global cap on tool calls in flight (`[limits] max_in_flight`).
//! Per-target concurrency is the target's own (`targets::Target::permit`).
//!
//! Owns: the `[limits]` configuration, the buckets, the in-flight semaphore, and the refusal
//! ([`Refused`]) that tells the caller when to retry.
//!
//! Does not: audit (the `mcp` layer records every refusal), know MCP, or do IO. **Invariant:** a
//! refused call consumes nothing (no token is taken from a bucket by a call the cap refused).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::tools::Risk;

/// `[limits]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_in_flight: usize,
    pub rate: RateSection,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_in_flight: 64,
            rate: RateSection::default(),
        }
    }
}

/// `[limits.rate]`: one bucket per principal and risk level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateSection {
    pub low: Bucket,
    pub moderate: Bucket,
    pub high: Bucket,
    pub critical: Bucket,
}

impl Default for RateSection {
    fn default() -> Self {
        RateSection {
            low: Bucket {
                burst: 60,
                per_minute: 600,
            },
            moderate: Bucket {
                burst: 20,
                per_minute: 60,
            },
            high: Bucket {
                burst: 10,
                per_minute: 20,
            },
            critical: Bucket {
                burst: 5,
                per_minute: 10,
            },
        }
    }
}

/// A token bucket: up to `burst` calls at once, refilled at `per_minute` calls a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub burst: u32,
    pub per_minute: u32,
}

/// The validated `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_in_flight: usize,
    /// Indexed by [`risk_index`].
    pub rate: [Bucket; 4],
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig::build(LimitsSection::default()).unwrap_or_else(|_| unreachable!("defaults are valid"))
    }
}

impl LimitsConfig {
    /// Validate a section; an error names the key (`limits.rate.high.burst`) and the range.
    pub fn build(s: LimitsSection) -> Result<LimitsConfig, (String, String)> {
        if !(1..=10_000).contains(&s.max_in_flight) {
            return Err((
                "limits.max_in_flight".into(),
                format!("must be between 1 and 10000, got {}", s.max_in_flight),
            ));
        }
        let named = [
            ("low", s.rate.low),
            ("moderate", s.rate.moderate),
            ("high", s.rate.high),
            ("critical", s.rate.critical),
        ];
        for (name, b) in &named {
            if !(1..=100_000).contains(&b.burst) {
                return Err((
                    format!("limits.rate.{name}.burst"),
                    format!("must be between 1 and 100000, got {}", b.burst),
                ));
            }
            if !(1..=1_000_000).contains(&b.per_minute) {
                return Err((
                    format!("limits.rate.{name}.per_minute"),
                    format!("must be between 1 and 1000000, got {}", b.per_minute),
                ));
            }
        }
        Ok(LimitsConfig {
            max_in_flight: s.max_in_flight,
            rate: named.map(|(_, b)| b),
        })
    }
}

fn risk_index(risk: Risk) -> usize {
    match risk {
        Risk::Low => 0,
        Risk::Moderate => 1,
        Risk::High => 2,
        Risk::Critical => 3,
    }
}

/// Why a call was refused, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub reason: String,
    /// Whole seconds, at least 1.
    pub retry_after_secs: u64,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; nothing ran; retry after {} s",
            self.reason, self.retry_after_secs
        )
    }
}

/// Held while a call runs; dropping it frees the in-flight slot.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// The live limits of one server.
pub struct Limits {
    config: LimitsConfig,
    in_flight: Arc<Semaphore>,
    /// Per principal, one bucket per risk level (`None` until first used).
    buckets: Mutex<HashMap<String, [Option<State>; 4]>>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    tokens: f64,
    at: Instant,
}

/// Buckets idle this long are full again and forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Sweep forgotten buckets when the map grows past this.
const SWEEP_AT: usize = 4096;

impl Limits {
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admit one call of `principal` at `risk`, or say when to retry. The in-flight slot is
    /// taken first, so a call refused for being over the cap takes no token.
    pub fn admit(&self, principal: &str, risk: Risk) -> Result<Admitted, Refused> {
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| Refused {
            reason: format!(
                "the server is at its limit of {} tool calls in flight",
                self.config.max_in_flight
            ),
            retry_after_secs: 1,
        })?;
        self.take(principal, risk, Instant::now())?;
        Ok(Admitted { _permit: permit })
    }

    fn take(&self, principal: &str, risk: Risk, now: Instant) -> Result<(), Refused> {
        let i = risk_index(risk);
        let bucket = self.config.rate[i];
        let rate = f64::from(bucket.per_minute) / 60.0;
        let burst = f64::from(bucket.burst);
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SWEEP_AT {
            map.retain(|_, states| states.iter().flatten().any(|s| now.duration_since(s.at) < FORGET_AFTER));
        }
        // Look up without allocating; only a principal's first call copies its name.
        if !map.contains_key(principal) {
            map.insert(principal.to_string(), [None; 4]);
        }
        let Some(states) = map.get_mut(principal) else {
            unreachable!("inserted above")
        };
        let state = states[i].get_or_insert(State { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(state.at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate).min(burst);
        state.at = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - state.tokens) / rate;
        Err(Refused {
            reason: format!(
                "rate limit: {principal} may make {} {}-risk calls at once and {} a minute",
                bucket.burst,
                risk_name(risk),
                bucket.per_minute
            ),
            retry_after_secs: (wait.ceil() as u64).max(1),
        })
    }
}

fn risk_name(risk: Risk) -> &'static str {
    match risk {
        Risk::Low => "low",
        Risk::Moderate => "moderate",
        Risk::High => "high",
        Risk::Critical => "critical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32, per_minute: u32, in_flight: usize) -> Limits {
        let b = Bucket { burst, per_minute };
        Limits::new(LimitsConfig {
            max_in_flight: in_flight,
            rate: [b; 4],
        })
    }

    #[test]
    fn a_bucket_trips_after_its_burst_and_refills_at_its_rate() {
        let l = limits(2, 60, 10);
        let t0 = Instant::now();
        assert!(l.take("alice", Risk::Low, t0).is_ok());
        assert!(l.take("alice", Risk::Low, t0).is_ok());
        let refused = l.take("alice", Risk::Low, t0).unwrap_err();
        assert_eq!(refused.retry_after_secs, 1, "{refused}");
        assert!(refused.to_string().contains("retry after 1 s"), "{refused}");
        // Others and other risk levels have their own buckets.
        assert!(l.take("bob", Risk::Low, t0).is_ok());
        assert!(l.take("alice", Risk::High, t0).is_ok());
        // One token a second comes back.
        assert!(l.take("alice", Risk::Low, t0 + Duration::from_millis(1000)).is_ok());
        assert!(l.take("alice", Risk::Low, t0 + Duration::from_millis(1000)).is_err());
    }

    #[test]
    fn retry_after_is_the_time_to_the_next_token() {
        let l = limits(1, 6, 10);
        let t0 = Instant::now();
        assert!(l.take("a", Risk::Critical, t0).is_ok());
        assert_eq!(l.take("a", Risk::Critical, t0).unwrap_err().retry_after_secs, 10);
        assert_eq!(
            l.take("a", Risk::Critical, t0 + Duration::from_secs(4))
                .unwrap_err()
                .retry_after_secs,
            6
        );
    }

    #[test]
    fn the_in_flight_cap_refuses_without_taking_a_token() {
        let l = limits(1, 60, 1);
        let held = l.admit("alice", Risk::Low).expect("first call");
        let refused = l.admit("bob", Risk::Low).err().expect("cap reached");
        assert!(refused.reason.contains("1 tool calls in flight"), "{refused}");
        drop(held);
        assert!(
            l.admit("bob", Risk::Low).is_ok(),
            "bob's token was not spent by the refusal"
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut s = LimitsSection::default();
        s.rate.high.burst = 0;
        assert_eq!(LimitsConfig::build(s).unwrap_err().0, "limits.rate.high.burst");
        let s = LimitsSection {
            max_in_flight: 0,
            ..LimitsSection::default()
        };
        assert_eq!(LimitsConfig::build(s).unwrap_err().0, "limits.max_in_flight");
    }
}
