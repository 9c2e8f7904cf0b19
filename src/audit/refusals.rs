//! Aggregation of repeated identical refusals ([`super::Auditor::refuse`]): the first refusal
//! with a given key is written at once; identical ones within the window are only counted; when
//! the window ends, one summary row carries their count and time span.
//!
//! The key is the caller (principal, or the peer's IP without its port for an unknown peer),
//! method, tool, target and reason, all already capped. The summary row is the first refusal's
//! record with a fresh request id and time, `reason` starting `repeated N more times FIRST–LAST:`
//! and `arguments` `{"repeated": N, "first": FIRST, "last": LAST}` (the repeated calls' own
//! arguments are not kept). At most [`MAX_OPEN`] windows are open; beyond that a refusal is
//! written as its own row (never dropped).
//!
//! Does not: write (the auditor does), or keep time itself: windows close when their timer task
//! fires, when the same key comes back after the window, or when the auditor is flushed or
//! dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Decision, Outcome, Record, now_rfc3339};

/// Most windows open at once (distinct keys being counted).
pub(crate) const MAX_OPEN: usize = 1024;

/// What identifies "the same refusal".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    who: String,
    method: String,
    tool: Option<String>,
    target: Option<String>,
    reason: Option<String>,
}

impl Key {
    /// The key of `rec` (whose strings are already capped).
    pub(crate) fn of(rec: &Record) -> Key {
        let who = match (&rec.principal, &rec.remote_addr) {
            (Some(p), _) => format!("principal {p}"),
            (None, Some(addr)) => match addr.parse::<SocketAddr>() {
                Ok(a) => format!("peer {}", a.ip()),
                Err(_) => format!("peer {addr}"),
            },
            (None, None) => "nobody".to_string(),
        };
        Key {
            who,
            method: rec.method.clone(),
            tool: rec.tool.clone(),
            target: rec.target.clone(),
            reason: rec.reason.clone(),
        }
    }
}

struct Window {
    /// Tells this window from a later one with the same key (for the timer).
    generation: u64,
    opened: Instant,
    /// The first refusal, without arguments: what the summary repeats.
    template: Record,
    repeated: u64,
    first: String,
    last: String,
}

/// What [`Refusals::admit`] decided for one refusal.
pub(crate) enum Admit {
    /// Write it now; with `Some`, it opened the window `(key, generation)`, to be closed by a
    /// timer after the window.
    Write(Option<(Key, u64)>),
    /// Counted in an open window: write nothing.
    Counted,
}

pub(crate) struct Refusals {
    window: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: HashMap<Key, Window>,
    generation: u64,
}

impl Refusals {
    pub(crate) fn new(window: Duration) -> Refusals {
        Refusals {
            window,
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Decide for `rec` (key `key`) at `now`. Also returns the summary of the window it ends,
    /// if the same key's previous window is over and counted anything (write it first).
    pub(crate) fn admit(&self, key: Key, rec: &Record, now: Instant) -> (Option<Record>, Admit) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = None;
        if let Some(w) = state.open.get_mut(&key) {
            if now.duration_since(w.opened) < self.window {
                w.repeated += 1;
                if w.first.is_empty() {
                    w.first = rec.time.clone();
                }
                w.last = rec.time.clone();
                return (None, Admit::Counted);
            }
            ended = state.open.remove(&key).and_then(summary);
        }
        if state.open.len() >= MAX_OPEN {
            return (ended, Admit::Write(None));
        }
        state.generation += 1;
        let generation = state.generation;
        let mut template = rec.clone();
        template.arguments = None;
        state.open.insert(
            key.clone(),
            Window {
                generation,
                opened: now,
                template,
                repeated: 0,
                first: String::new(),
                last: String::new(),
            },
        );
        (ended, Admit::Write(Some((key, generation))))
    }

    /// Close window `generation` of `key` (its timer fired): its summary, if it counted anything.
    pub(crate) fn close(&self, key: &Key, generation: u64) -> Option<Record> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.open.get(key).map(|w| w.generation) != Some(generation) {
            return None;
        }
        state.open.remove(key).and_then(summary)
    }

    /// Close every open window: the summaries of those that counted anything.
    pub(crate) fn drain(&self) -> Vec<Record> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open.drain().filter_map(|(_, w)| summary(w)).collect()
    }
}

/// The summary row of a window that counted at least one repeat.
fn summary(w: Window) -> Option<Record> {
    if w.repeated == 0 {
        return None;
    }
    let reason = format!(
        "repeated {} more times {}–{}: {}",
        w.repeated,
        w.first,
        w.last,
        w.template.reason.as_deref().unwrap_or("")
    );
    Some(Record {
        id: None,
        time: now_rfc3339(),
        request_id: uuid::Uuid::new_v4().to_string(),
        decision: Decision::Deny,
        outcome: Outcome::Denied,
        reason: Some(reason),
        arguments: Some(serde_json::json!({
            "repeated": w.repeated,
            "first": w.first,
            "last": w.last,
        })),
        duration_ms: None,
        result_bytes: None,
        error: None,
        ..w.template
    })
}

/// How many refusals `rec` stands for when it is a summary row: its count of repeats (see the
/// module documentation); `None` for any other row.
pub(crate) fn repeated(rec: &Record) -> Option<u64> {
    if rec.decision != Decision::Deny || !rec.reason.as_deref().is_some_and(|r| r.starts_with("repeated ")) {
        return None;
    }
    let args = rec.arguments.as_ref()?.as_object()?;
    if args.len() != 3 || !args.contains_key("first") || !args.contains_key("last") {
        return None;
    }
    args.get("repeated")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(principal: Option<&str>, addr: &str, reason: &str) -> Record {
        Record {
            principal: principal.map(str::to_string),
            remote_addr: Some(addr.to_string()),
            method: "tools/call".into(),
            tool: Some("services_restart".into()),
            target: Some("local".into()),
            reason: Some(reason.into()),
            arguments: Some(serde_json::json!({"unit": "x"})),
            ..Record::new()
        }
    }

    #[test]
    fn keys_ignore_the_port_and_the_arguments() {
        let a = refusal(None, "100.64.0.9:1000", "r");
        let mut b = refusal(None, "100.64.0.9:2000", "r");
        b.arguments = None;
        assert_eq!(Key::of(&a), Key::of(&b));
        assert_ne!(Key::of(&a), Key::of(&refusal(None, "100.64.0.8:1000", "r")));
        assert_ne!(Key::of(&a), Key::of(&refusal(None, "100.64.0.9:1000", "other")));
        // A principal is the key, whatever its address.
        assert_eq!(
            Key::of(&refusal(Some("alice"), "100.64.0.1:1", "r")),
            Key::of(&refusal(Some("alice"), "100.64.0.2:1", "r"))
        );
        let v6 = refusal(None, "[fd7a:115c:a1e0::1]:443", "r");
        assert_eq!(Key::of(&v6).who, "peer fd7a:115c:a1e0::1");
    }

    #[test]
    fn a_window_counts_then_summarizes() {
        let r = Refusals::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let rec = refusal(Some("alice"), "100.64.0.1:1", "no scope");
        let key = Key::of(&rec);
        let (ended, admit) = r.admit(key.clone(), &rec, t0);
        assert!(ended.is_none());
        let Admit::Write(Some((k, generation))) = admit else {
            panic!("the first refusal is written")
        };
        assert_eq!(k, key);
        for i in 1..=57 {
            let (ended, admit) = r.admit(key.clone(), &rec, t0 + Duration::from_millis(i * 100));
            assert!(ended.is_none() && matches!(admit, Admit::Counted));
        }
        // A stale timer of another generation closes nothing.
        assert!(r.close(&key, generation + 1).is_none());
        let s = r.close(&key, generation).expect("a summary");
        assert_eq!(repeated(&s), Some(57));
        assert!(s.reason.as_deref().unwrap().starts_with("repeated 57 more times "));
        assert!(s.reason.as_deref().unwrap().ends_with(": no scope"));
        assert_eq!(s.principal.as_deref(), Some("alice"));
        assert_ne!(s.request_id, rec.request_id);
        assert!(r.close(&key, generation).is_none(), "closed once");
        assert_eq!(repeated(&rec), None);
    }

    #[test]
    fn the_same_key_after_the_window_ends_it_and_opens_another() {
        let r = Refusals::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let rec = refusal(None, "100.64.0.9:1", "unknown peer");
        let key = Key::of(&rec);
        r.admit(key.clone(), &rec, t0);
        r.admit(key.clone(), &rec, t0 + Duration::from_secs(1));
        let (ended, admit) = r.admit(key.clone(), &rec, t0 + Duration::from_secs(11));
        assert_eq!(ended.as_ref().and_then(repeated), Some(1));
        assert!(matches!(admit, Admit::Write(Some(_))));
        // A window without repeats ends without a summary.
        let (ended, _) = r.admit(key, &rec, t0 + Duration::from_secs(30));
        assert!(ended.is_none());
    }

    #[test]
    fn open_windows_are_bounded_and_drained() {
        let r = Refusals::new(Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..MAX_OPEN + 5 {
            let rec = refusal(Some(&format!("user{i}")), "100.64.0.1:1", "r");
            let (_, admit) = r.admit(Key::of(&rec), &rec, now);
            let Admit::Write(opened) = admit else { panic!() };
            assert_eq!(opened.is_some(), i < MAX_OPEN, "{i}");
            // The second of each is counted only while its window is open.
            let (_, again) = r.admit(Key::of(&rec), &rec, now);
            assert_eq!(matches!(again, Admit::Counted), i < MAX_OPEN, "{i}");
        }
        let summaries = r.drain();
        assert_eq!(summaries.len(), MAX_OPEN);
        assert!(summaries.iter().all(|s| repeated(s) == Some(1)));
        assert!(r.drain().is_empty());
    }
}
