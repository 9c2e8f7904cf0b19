//! Call limits the `mcp` and `http` layers apply: per-principal token buckets by risk level
//! (`[limits.rate.*]`, charged by every call, denied ones included), caps on tool calls in flight
//! (the whole server, one principal, one principal's share of a target), sessions per principal,
//! and a token bucket per peer address for refusals at the identity layer.
//! Per-target concurrency is the target's own (`targets::Target::permit`).
//!
//! Owns: the `[limits]` configuration, the buckets, the in-flight counters, and the refusal
//! ([`Refused`]) that tells the caller when to retry.
//!
//! Does not: audit (callers record every refusal), know MCP, or do IO. **Invariant:** a call
//! refused for being over an in-flight cap holds no slot; slots are taken only for the run itself
//! (after any confirmation or approval wait), never while a call waits for a person.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::model::Risk;

pub use crate::config::limits::{Bucket, LimitsConfig};

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

/// Held while a call runs; dropping it frees its slots (the server's, the principal's and the
/// principal's share of each target).
pub struct InFlight {
    _permit: OwnedSemaphorePermit,
    loads: Arc<Mutex<HashMap<String, Load>>>,
    principal: String,
    targets: Vec<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(load) = loads.get_mut(&self.principal) else {
            return;
        };
        // Entries stay at zero (no allocation on the next call); `occupy` sweeps idle ones.
        load.total = load.total.saturating_sub(1);
        for t in &self.targets {
            if let Some(n) = load.per_target.get_mut(t) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// One principal's calls in flight: in all, and per target.
#[derive(Default)]
struct Load {
    total: usize,
    per_target: HashMap<String, usize>,
}

/// The live limits of one server.
pub struct Limits {
    config: LimitsConfig,
    in_flight: Arc<Semaphore>,
    loads: Arc<Mutex<HashMap<String, Load>>>,
    /// Per principal, one bucket per risk level (`None` until first used).
    buckets: Mutex<HashMap<String, [Option<State>; 4]>>,
}

/// Refusals at the identity layer, one bucket per peer address (`[limits.refusals]`): an
/// address that used up its bucket is answered 429 without asking tailscaled until it refills,
/// so a flood from one address costs neither whois calls nor an audit row per request.
pub struct Refusals {
    bucket: Bucket,
    map: Mutex<HashMap<IpAddr, State>>,
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
            loads: Arc::new(Mutex::new(HashMap::new())),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Charge one call of `principal` at `risk` to its bucket, or say when to retry. Every
    /// `tools/call` is charged, a denied one too, so a flood of denied calls is slowed like any
    /// other.
    pub fn charge(&self, principal: &str, risk: Risk) -> Result<(), Refused> {
        self.take(principal, risk, Instant::now())
    }

    /// Take the slots one run needs: one of the server's `max_in_flight`, one of the
    /// principal's `max_in_flight_per_principal`, and on each of `targets` (id, slots) one of
    /// the principal's share: half the target's slots, at least one, so one caller's slow calls
    /// cannot take every slot of a target from everyone else. Refuses at once (never waits).
    pub fn occupy(&self, principal: &str, targets: &[(&str, usize)]) -> Result<InFlight, Refused> {
        let refused = |reason: String| Refused {
            reason,
            retry_after_secs: 1,
        };
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            refused(format!(
                "the server is at its limit of {} tool calls in flight",
                self.config.max_in_flight
            ))
        })?;
        let mut loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
        if loads.len() > SWEEP_AT {
            loads.retain(|_, l| l.total > 0);
        }
        // Look up without allocating; only a principal's first call copies its name.
        if !loads.contains_key(principal) {
            loads.insert(principal.to_string(), Load::default());
        }
        let Some(load) = loads.get_mut(principal) else {
            unreachable!("inserted above")
        };
        let cap = self.config.max_in_flight_per_principal;
        if load.total >= cap {
            return Err(refused(format!(
                "{principal} already has {} tool calls in flight (the limit per caller is {cap})",
                load.total
            )));
        }
        for (id, slots) in targets {
            let share = target_share(*slots);
            let held = load.per_target.get(*id).copied().unwrap_or(0);
            if held >= share {
                return Err(refused(format!(
                    "{principal} already has {held} calls in flight on target `{id}` (a caller may hold {share} of its {slots} slots)"
                )));
            }
        }
        load.total += 1;
        for (id, _) in targets {
            match load.per_target.get_mut(*id) {
                Some(n) => *n += 1,
                None => {
                    load.per_target.insert((*id).to_string(), 1);
                }
            }
        }
        drop(loads);
        Ok(InFlight {
            _permit: permit,
            loads: self.loads.clone(),
            principal: principal.to_string(),
            targets: targets.iter().map(|(id, _)| (*id).to_string()).collect(),
        })
    }

    fn take(&self, principal: &str, risk: Risk, now: Instant) -> Result<(), Refused> {
        let i = risk.index();
        let bucket = self.config.rate[i];
        let rate = f64::from(bucket.per_minute) / 60.0;
        let burst = f64::from(bucket.burst);
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
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
        state.tokens = refill(*state, bucket, now);
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
                risk.as_str(),
                bucket.per_minute
            ),
            retry_after_secs: (wait.ceil() as u64).max(1),
        })
    }
}

impl Refusals {
    pub fn new(bucket: Bucket) -> Refusals {
        Refusals {
            bucket,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a request from `addr` may still be refused with an answer from tailscaled;
    /// `Err` once the address used up its refusals (answer it without asking anyone).
    pub fn left(&self, addr: IpAddr) -> Result<(), Refused> {
        let now = Instant::now();
        let bucket = self.bucket;
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(state) = map.get(&addr) else {
            return Ok(());
        };
        let tokens = refill(*state, bucket, now);
        if tokens >= 1.0 {
            return Ok(());
        }
        Err(self.refusal_limit(addr, tokens))
    }

    /// Count one identity-layer refusal of `addr`.
    pub fn count(&self, addr: IpAddr) {
        let now = Instant::now();
        let bucket = self.bucket;
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > SWEEP_AT {
            map.retain(|_, s| now.duration_since(s.at) < FORGET_AFTER);
        }
        let state = map.entry(addr).or_insert(State {
            tokens: f64::from(bucket.burst),
            at: now,
        });
        state.tokens = (refill(*state, bucket, now) - 1.0).max(0.0);
        state.at = now;
    }

    fn refusal_limit(&self, addr: IpAddr, tokens: f64) -> Refused {
        let bucket = self.bucket;
        let rate = f64::from(bucket.per_minute) / 60.0;
        Refused {
            reason: format!(
                "too many refused requests from {addr} ({} at once, {} a minute)",
                bucket.burst, bucket.per_minute
            ),
            retry_after_secs: (((1.0 - tokens) / rate).ceil() as u64).max(1),
        }
    }
}

/// Open connections per peer address (`[server] max_connections_per_address`), so one address
/// cannot take every one of the server's `max_connections`.
pub struct PerAddress {
    cap: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in its address's count; dropping it gives the place back.
pub struct AddressSlot {
    addr: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    pub fn new(cap: usize) -> PerAddress {
        PerAddress {
            cap,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A place for one more connection from `addr`, or `None` when it has `cap` open.
    pub fn take(&self, addr: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(addr).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            addr,
            open: self.open.clone(),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// `state`'s tokens at `now`.
fn refill(state: State, bucket: Bucket, now: Instant) -> f64 {
    let rate = f64::from(bucket.per_minute) / 60.0;
    let elapsed = now.saturating_duration_since(state.at).as_secs_f64();
    (state.tokens + elapsed * rate).min(f64::from(bucket.burst))
}

/// How many of a target's `slots` one principal may hold: half, at least one.
pub fn target_share(slots: usize) -> usize {
    slots.div_ceil(2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::limits::*;

    fn limits(burst: u32, per_minute: u32, in_flight: usize) -> Limits {
        let b = Bucket { burst, per_minute };
        Limits::new(LimitsConfig {
            max_in_flight: in_flight,
            rate: [b; 4],
            ..LimitsConfig::default()
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
    fn the_in_flight_cap_refuses_and_frees_its_slot_on_drop() {
        let l = limits(1, 60, 1);
        let held = l.occupy("alice", &[("local", 16)]).expect("first call");
        let refused = l.occupy("bob", &[("local", 16)]).err().expect("cap reached");
        assert!(refused.reason.contains("1 tool calls in flight"), "{refused}");
        drop(held);
        assert!(l.occupy("bob", &[("local", 16)]).is_ok(), "the slot came back");
    }

    #[test]
    fn one_principal_holds_at_most_its_cap_and_half_a_targets_slots() {
        let l = Limits::new(LimitsConfig {
            max_in_flight: 64,
            max_in_flight_per_principal: 8,
            ..LimitsConfig::default()
        });
        // Half of local's 16 slots: 8, which is also the per-principal cap.
        let mut held: Vec<InFlight> = (0..8).map(|_| l.occupy("alice", &[("local", 16)]).unwrap()).collect();
        let refused = l.occupy("alice", &[("local", 16)]).err().expect("alice is at her cap");
        assert!(refused.reason.contains("8 tool calls in flight"), "{refused}");
        // Someone else still gets the other half.
        let bob: Vec<InFlight> = (0..8).map(|_| l.occupy("bob", &[("local", 16)]).unwrap()).collect();
        // A 4-slot target: a caller may hold 2 of them.
        drop(held.pop());
        let c1 = l.occupy("carol", &[("nas", 4)]).unwrap();
        let c2 = l.occupy("carol", &[("nas", 4)]).unwrap();
        let refused = l
            .occupy("carol", &[("nas", 4)])
            .err()
            .expect("carol holds her share of nas");
        assert!(refused.reason.contains("2 of its 4 slots"), "{refused}");
        assert!(
            l.occupy("carol", &[("local", 16)]).is_ok(),
            "other targets are not affected"
        );
        drop((c1, c2, bob));
        assert!(l.occupy("carol", &[("nas", 4)]).is_ok(), "dropping frees the share");
        assert_eq!(target_share(1), 1);
        assert_eq!(target_share(3), 2);
    }

    #[test]
    fn connections_are_counted_per_address() {
        let p = PerAddress::new(2);
        let a: IpAddr = "100.100.9.9".parse().unwrap();
        let b: IpAddr = "100.100.9.10".parse().unwrap();
        let (one, _two) = (p.take(a).unwrap(), p.take(a).unwrap());
        assert!(p.take(a).is_none(), "a third from the same address");
        assert!(p.take(b).is_some(), "another address has its own count");
        drop(one);
        assert!(p.take(a).is_some(), "a closed connection gives its place back");
    }

    #[test]
    fn identity_refusals_are_limited_per_address() {
        let l = Refusals::new(Bucket {
            burst: 3,
            per_minute: 60,
        });
        let a: IpAddr = "100.100.9.9".parse().unwrap();
        let b: IpAddr = "100.100.9.10".parse().unwrap();
        for _ in 0..3 {
            assert!(l.left(a).is_ok());
            l.count(a);
        }
        let limited = l.left(a).unwrap_err();
        assert!(
            limited.reason.contains("too many refused requests from 100.100.9.9"),
            "{limited}"
        );
        assert_eq!(limited.retry_after_secs, 1);
        assert!(l.left(b).is_ok(), "another address has its own bucket");
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
        let s = LimitsSection {
            max_sessions_per_principal: 0,
            ..LimitsSection::default()
        };
        assert_eq!(
            LimitsConfig::build(s).unwrap_err().0,
            "limits.max_sessions_per_principal"
        );
        let mut s = LimitsSection::default();
        s.refusals.per_minute = 0;
        assert_eq!(LimitsConfig::build(s).unwrap_err().0, "limits.refusals.per_minute");
    }
}
