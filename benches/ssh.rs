//! Budgets of the SSH executor against a real sshd on loopback (`cargo bench --bench ssh`):
//!
//! - one cheap command (`true`) on a reused connection: p50 ≤ 15 ms;
//! - fan-out of the same command over 20 targets (distinct target ids, one `Ssh` each, same
//!   sshd, connections already open) with 8 in flight (`buffer_unordered(8)`): p50 of a whole
//!   fan-out ≤ 3 × the single-target p50.
//!
//! Prints the figures and the machine, with the CPU each side used per call and the floor that
//! puts under the fan-out; exits non-zero when a budget is missed. `BENCH_FANOUT_ROUNDS` (default
//! 60) lengthens the warm fan-out, e.g. to profile it. It owns no
//! product logic: it drives `exec::ssh::Ssh` exactly as a tool would.

#[path = "../tests/support/host.rs"]
mod host;
#[path = "../tests/support/sshd.rs"]
mod sshd;

use std::time::{Duration, Instant};

use futures::StreamExt;
use tailopsmcp::exec::ssh::{Ssh, SshSettings, SudoPolicy};
use tailopsmcp::exec::{CommandSpec, Limits};

const SINGLE_CALLS: usize = 500;
const FANOUT_TARGETS: usize = 20;
const FANOUT_CONCURRENCY: usize = 8;
const FANOUT_ROUNDS: usize = 60;
const P50_BUDGET_MS: f64 = 15.0;
const FANOUT_BUDGET_RATIO: f64 = 3.0;

/// Warm fan-out rounds: `BENCH_FANOUT_ROUNDS`, or [`FANOUT_ROUNDS`].
fn fanout_rounds() -> usize {
    std::env::var("BENCH_FANOUT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FANOUT_ROUNDS)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sshd = match sshd::Sshd::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start sshd: {e}");
            std::process::exit(2);
        }
    };
    println!("machine: {}", host::machine());
    println!("{}", host::probe_line("before"));
    let ok = rt.block_on(bench(&sshd));
    println!("{}", host::probe_line("after"));
    drop(sshd);
    if !ok {
        std::process::exit(1);
    }
}

async fn bench(s: &sshd::Sshd) -> bool {
    let known_hosts = s.write_known_hosts("known_hosts", &[s.known_hosts_line()]);
    let settings = SshSettings {
        host: "127.0.0.1".into(),
        port: s.port(),
        user: s.user().into(),
        key_file: Some(s.client_key_path()),
        agent: false,
        known_hosts: Some(known_hosts),
        host_key_fingerprint: None,
        trust_on_first_use: false,
        sudo: SudoPolicy::None,
    };
    let limits = Limits {
        timeout: Duration::from_secs(10),
        max_output: 64 * 1024,
    };
    let cheap = CommandSpec::new("true", Vec::<String>::new());

    // Single target, reused connection.
    let single = Ssh::new("bench-single", settings.clone(), limits, 8).expect("settings");
    let t = Instant::now();
    single.run(&cheap, false).await.expect("first call");
    let first_ms = ms(t.elapsed());
    for _ in 0..20 {
        single.run(&cheap, false).await.expect("warm-up");
    }
    let mut samples = Vec::with_capacity(SINGLE_CALLS);
    for _ in 0..SINGLE_CALLS {
        let t = Instant::now();
        let out = single.run(&cheap, false).await.expect("call");
        assert_eq!(out.status, Some(0));
        samples.push(ms(t.elapsed()));
    }
    assert_eq!(single.connections_opened(), 1, "one reused connection");
    let (p50, p90, p99) = percentiles(&mut samples);

    // Fan-out over 20 targets.
    let targets: Vec<Ssh> = (0..FANOUT_TARGETS)
        .map(|i| Ssh::new(&format!("bench-{i:02}"), settings.clone(), limits, 8).expect("settings"))
        .collect();
    let t = Instant::now();
    fan_out(&targets, &cheap).await; // opens the 20 connections
    let cold_ms = ms(t.elapsed());
    fan_out(&targets, &cheap).await;
    let n_rounds = fanout_rounds();
    let mut rounds = Vec::with_capacity(n_rounds);
    let (server_cpu, client_cpu) = (s.cpu_time(), own_cpu());
    for _ in 0..n_rounds {
        let t = Instant::now();
        fan_out(&targets, &cheap).await;
        rounds.push(ms(t.elapsed()));
    }
    let ops = (n_rounds * FANOUT_TARGETS) as f64;
    let server_per_op = ms(s.cpu_time().saturating_sub(server_cpu)) / ops;
    let client_per_op = ms(own_cpu().saturating_sub(client_cpu)) / ops;
    assert!(
        targets.iter().all(|t| t.connections_opened() == 1),
        "one connection per target"
    );
    let (f50, f90, _) = percentiles(&mut rounds);
    let ratio = f50 / p50;
    // The least wall time the fan-out's calls take when they keep every CPU busy.
    let floor = |cpu_per_call: f64| FANOUT_TARGETS as f64 * cpu_per_call / host::cores().max(1) as f64;

    println!(
        "sshd: {}",
        single.check().await.map(|c| c.server_version).unwrap_or_default()
    );
    println!("first call (connect + auth + true): {first_ms:.2} ms");
    println!(
        "single target, reused connection, `true` x{SINGLE_CALLS}: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms \
         (budget p50 <= {P50_BUDGET_MS} ms)"
    );
    println!(
        "fan-out over {FANOUT_TARGETS} targets, {FANOUT_CONCURRENCY} in flight, cold (20 connects): {cold_ms:.2} ms"
    );
    println!(
        "fan-out over {FANOUT_TARGETS} targets, {FANOUT_CONCURRENCY} in flight, warm x{n_rounds}: p50 {f50:.2} ms, \
         p90 {f90:.2} ms = {ratio:.2} x single p50 (budget <= {FANOUT_BUDGET_RATIO} x)"
    );
    println!(
        "CPU per call during the warm fan-out: sshd + remote shell {server_per_op:.2} ms, this client \
         {client_per_op:.2} ms; {FANOUT_TARGETS} calls on {} CPUs cannot take less than {:.2} ms ({:.2} x single \
         p50), and sshd's and the shell's share alone not less than {:.2} ms ({:.2} x); load average now {}",
        host::cores(),
        floor(server_per_op + client_per_op),
        floor(server_per_op + client_per_op) / p50,
        floor(server_per_op),
        floor(server_per_op) / p50,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut ok = true;
    if p50 > P50_BUDGET_MS {
        println!("BUDGET MISSED: single-call p50 {p50:.2} ms > {P50_BUDGET_MS} ms");
        ok = false;
    }
    if ratio > FANOUT_BUDGET_RATIO {
        println!("BUDGET MISSED: fan-out {ratio:.2} x > {FANOUT_BUDGET_RATIO} x");
        ok = false;
    }
    ok
}

async fn fan_out(targets: &[Ssh], cmd: &CommandSpec) {
    let results: Vec<_> = futures::stream::iter(targets.iter().cloned())
        .map(|t| {
            let cmd = cmd.clone();
            async move { t.run(&cmd, false).await }
        })
        .buffer_unordered(FANOUT_CONCURRENCY)
        .collect()
        .await;
    for r in results {
        assert_eq!(r.expect("fan-out call").status, Some(0));
    }
}

fn percentiles(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.90), at(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time (user + system) of this process.
fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
