//! The audit budgets (`cargo bench --bench audit`): audit writes sustain ≥ 20,000 rows/s with the
//! hash chain on 2 cores with WAL, and the chain adds ≤ 5% to a `whoami` call (its own cost per
//! row — canonical encoding, SHA-256 link, hex — against the `whoami` p50 of `--bench whoami`,
//! `BENCH_WHOAMI_P50_US`, default 600 µs). 200,000 `Auditor::record` calls from 32 tasks on a 2-worker
//! runtime, without and with the journald mirror, then `verify_path` over the rows written.
//!
//! Environment: `BENCH_ROWS` (default 200000), `BENCH_TASKS` (default 32), `BENCH_DIR` (where
//! the database goes; default a temp dir, which should be on a local disk, not tmpfs, to count).
//! The journald phase needs a journald (started by the test harness when absent; skipped with a
//! reason otherwise).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tailopsmcp::audit::{AuditOptions, Auditor, Decision, Outcome, Record, chain_cost_per_row, verify_path};

/// The budget from issue 5.
const BUDGET_ROWS_PER_SEC: f64 = 20_000.0;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn sample(task: usize, i: usize) -> Record {
    Record {
        principal: Some(format!("user{task}@example.com")),
        login: Some(format!("user{task}@example.com")),
        user_id: Some(task as i64),
        node_id: Some("nStable1".to_string()),
        node_name: Some("laptop.tail1234.ts.net".to_string()),
        remote_addr: Some("100.100.2.2:43817".to_string()),
        identity_source: Some("whois".to_string()),
        session_id: Some(format!("session-{task}")),
        method: "tools/call".to_string(),
        tool: Some("whoami".to_string()),
        target: Some("local".to_string()),
        arguments: Some(json!({"verbose": true, "i": i})),
        decision: Decision::Allow,
        reason: Some("scope system:read".to_string()),
        grants: vec!["system:read".to_string()],
        outcome: Outcome::Ok,
        duration_ms: Some(0.8),
        result_bytes: Some(512),
        ..Record::new()
    }
}

struct Phase {
    rows: usize,
    elapsed: Duration,
    p50_us: f64,
    p99_us: f64,
}

fn write_phase(path: &Path, journald: bool, rows: usize, tasks: usize) -> Phase {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let auditor = Auditor::open(
            path,
            AuditOptions {
                redact_fields: Vec::new(),
                journald,
                ..AuditOptions::default()
            },
        )
        .expect("open auditor");
        let start = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let auditor = auditor.clone();
            let n = rows / tasks + usize::from(t < rows % tasks);
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for i in 0..n {
                    let rec = sample(t, i);
                    let s = Instant::now();
                    auditor.record(rec).await.expect("record");
                    lat.push(s.elapsed().as_micros() as u32);
                }
                lat
            }));
        }
        let mut lat = Vec::with_capacity(rows);
        for h in handles {
            lat.extend(h.await.expect("task"));
        }
        let elapsed = start.elapsed();
        drop(auditor);
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize] as f64;
        Phase {
            rows,
            elapsed,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
        }
    })
}

fn report(name: &str, p: &Phase) -> f64 {
    let rate = p.rows as f64 / p.elapsed.as_secs_f64();
    let verdict = if rate >= BUDGET_ROWS_PER_SEC {
        "OK"
    } else {
        "OVER BUDGET"
    };
    println!(
        "{name:<28} {:>8} rows in {:>6.2} s = {:>8.0} rows/s  (record latency p50 {:.0} µs, p99 {:.0} µs)  [{verdict}: ≥ {BUDGET_ROWS_PER_SEC:.0}]",
        p.rows,
        p.elapsed.as_secs_f64(),
        rate,
        p.p50_us,
        p.p99_us
    );
    rate
}

fn verify_phase(path: &Path) {
    let start = Instant::now();
    let report = verify_path(path).expect("verify");
    let elapsed = start.elapsed();
    assert!(report.is_ok(), "{report}");
    println!(
        "{:<28} {:>8} rows in {:>6.2} s = {:>8.0} rows/s  ({} bytes on disk)",
        "verify_path",
        report.rows,
        elapsed.as_secs_f64(),
        report.rows as f64 / elapsed.as_secs_f64(),
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    );
}

fn main() {
    let rows = env_num("BENCH_ROWS", 200_000);
    let tasks = env_num("BENCH_TASKS", 32);
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    println!(
        "audit bench: {rows} records from {tasks} tasks, 2 runtime workers, WAL, synchronous=NORMAL, in {}",
        dir.path().display()
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }

    // What the chain itself costs the row a `whoami` call writes (the rest of writing a row
    // happens with or without a chain).
    let whoami_p50_us = env_num("BENCH_WHOAMI_P50_US", 600) as f64;
    let per_row = chain_cost_per_row(sample(0, 0), 200_000).expect("chain cost");
    let per_row_us = per_row.as_secs_f64() * 1e6;
    println!(
        "{:<28} {:>8.2} µs per row = {:.2}% of a {whoami_p50_us:.0} µs whoami call (budget 5%)",
        "hash chain, per row",
        per_row_us,
        100.0 * per_row_us / whoami_p50_us
    );

    let plain = dir.path().join("plain.db");
    let p = write_phase(&plain, false, rows, tasks);
    report("record, hash chain", &p);
    verify_phase(&plain);

    match support::journald::ensure_journald() {
        Ok(()) => {
            let mirrored = dir.path().join("mirrored.db");
            let p = write_phase(&mirrored, true, rows, tasks);
            report("record, chain + journald", &p);
            verify_phase(&mirrored);
        }
        Err(why) => println!("record, chain + journald: skipped: {why}"),
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at end: {}", load.trim());
    }
}
