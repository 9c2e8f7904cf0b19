//! `[limits]`: per-principal token buckets by risk level, and the caps on calls in flight,
//! sessions and connections.

use serde::Deserialize;

/// `[limits]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_in_flight: usize,
    pub max_in_flight_per_principal: usize,
    pub max_sessions_per_principal: usize,
    pub refusals: Bucket,
    pub rate: RateSection,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_in_flight: 64,
            max_in_flight_per_principal: 8,
            max_sessions_per_principal: 16,
            refusals: Bucket {
                burst: 20,
                per_minute: 60,
            },
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
    /// Tool calls of one principal in flight at once, on all targets together. On one target a
    /// principal also holds at most half its slots (at least one): see [`Limits::occupy`].
    pub max_in_flight_per_principal: usize,
    /// MCP sessions one principal may hold; a new one closes its oldest idle one.
    pub max_sessions_per_principal: usize,
    /// Refusals at the identity layer per peer address (no identity, Host, own node, session):
    /// past the bucket, the address is refused without asking tailscaled until it refills.
    pub refusals: Bucket,
    /// Indexed by [`Risk::index`].
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
        for (key, value, max) in [
            (
                "limits.max_in_flight_per_principal",
                s.max_in_flight_per_principal,
                10_000,
            ),
            (
                "limits.max_sessions_per_principal",
                s.max_sessions_per_principal,
                10_000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err((key.into(), format!("must be between 1 and {max}, got {value}")));
            }
        }
        let named = [
            ("refusals", s.refusals),
            ("low", s.rate.low),
            ("moderate", s.rate.moderate),
            ("high", s.rate.high),
            ("critical", s.rate.critical),
        ];
        for (name, b) in &named {
            let name = if *name == "refusals" {
                "refusals".to_string()
            } else {
                format!("rate.{name}")
            };
            if !(1..=100_000).contains(&b.burst) {
                return Err((
                    format!("limits.{name}.burst"),
                    format!("must be between 1 and 100000, got {}", b.burst),
                ));
            }
            if !(1..=1_000_000).contains(&b.per_minute) {
                return Err((
                    format!("limits.{name}.per_minute"),
                    format!("must be between 1 and 1000000, got {}", b.per_minute),
                ));
            }
        }
        Ok(LimitsConfig {
            max_in_flight: s.max_in_flight,
            max_in_flight_per_principal: s.max_in_flight_per_principal,
            max_sessions_per_principal: s.max_sessions_per_principal,
            refusals: s.refusals,
            rate: [s.rate.low, s.rate.moderate, s.rate.high, s.rate.critical],
        })
    }
}
