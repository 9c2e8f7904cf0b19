//! Whether a destination answers: `ping` and `traceroute` (or `tracepath`) through a
//! [`Runner`] (this host or an SSH host), with pure parsers for their output, and TCP port
//! checks from this host.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::model::{Hop, PingResult, PortState, TraceResult};
use super::{Host, command_failed, ms};
use crate::exec::remote::Runner;
use crate::exec::show::cut;
use crate::exec::{CommandSpec, ExecError, Output};

/// The `ping` command: numeric output, `count` echo requests 200 ms apart, waiting at most
/// `deadline_secs` in all.
pub fn ping_command(host: &Host, count: u32, deadline_secs: u32) -> CommandSpec {
    CommandSpec::new(
        "ping",
        [
            "-n".to_string(),
            "-c".to_string(),
            count.to_string(),
            "-i".to_string(),
            "0.2".to_string(),
            "-W".to_string(),
            deadline_secs.min(10).to_string(),
            "-w".to_string(),
            deadline_secs.to_string(),
            host.as_arg(),
        ],
    )
}

/// Ping `host` through `runner` (locally or over SSH).
pub async fn ping(runner: &dyn Runner, host: &Host, count: u32, deadline_secs: u32) -> Result<PingResult, ExecError> {
    let cmd = ping_command(host, count, deadline_secs);
    let out = runner.run(&cmd).await?;
    if out.timed_out {
        return Err(ExecError::Timeout(Duration::from_secs(u64::from(deadline_secs))));
    }
    match parse_ping(&host.as_arg(), &out.stdout) {
        Some(result) => Ok(result),
        None if not_permitted(&out.stderr) => Err(ExecError::Failed(format!(
            "`ping` may not open an ICMP socket here ({}): it needs CAP_NET_RAW in the service's \
             capability bounding set (ping's file capability; a drop-in with \
             `CapabilityBoundingSet=CAP_NET_RAW`) or the service's group in \
             net.ipv4.ping_group_range",
            cut(out.stderr.trim(), 200)
        ))),
        None => Err(command_failed("ping", &out)),
    }
}

fn not_permitted(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("operation not permitted") || s.contains("permission denied")
}

/// Parse iputils `ping -n` output. `None` when there is no statistics line (ping failed before
/// sending: unknown host, no permission).
pub fn parse_ping(host: &str, stdout: &str) -> Option<PingResult> {
    let mut result = PingResult {
        host: host.to_string(),
        address: None,
        transmitted: 0,
        received: 0,
        loss_percent: 100.0,
        rtt_min_ms: None,
        rtt_avg_ms: None,
        rtt_max_ms: None,
        rtt_mdev_ms: None,
        replies_ms: Vec::new(),
        errors: Vec::new(),
    };
    let mut stats = false;
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("PING ") {
            // PING host (addr) 56(84) bytes of data.
            if let (Some(open), Some(close)) = (rest.find('('), rest.find(')')) {
                result.address = Some(rest[open + 1..close].to_string());
            }
        } else if line.contains("packets transmitted") {
            stats = true;
            for part in line.split(',') {
                let part = part.trim();
                let num = part.split_whitespace().next().unwrap_or("");
                if part.ends_with("packets transmitted") {
                    result.transmitted = num.parse().ok()?;
                } else if part.ends_with("received") {
                    result.received = num.parse().ok()?;
                } else if part.ends_with("packet loss") {
                    result.loss_percent = num.trim_end_matches('%').parse().ok()?;
                }
            }
        } else if let Some(rest) = line
            .strip_prefix("rtt min/avg/max/mdev = ")
            .or_else(|| line.strip_prefix("round-trip min/avg/max = "))
        {
            let nums: Vec<f64> = rest
                .trim_end_matches(" ms")
                .split('/')
                .filter_map(|v| v.trim().parse().ok())
                .collect();
            result.rtt_min_ms = nums.first().copied();
            result.rtt_avg_ms = nums.get(1).copied();
            result.rtt_max_ms = nums.get(2).copied();
            result.rtt_mdev_ms = nums.get(3).copied();
        } else if let Some(pos) = line.find("time=") {
            if line.contains("bytes from") {
                let v = line[pos + 5..].trim_end_matches(" ms").trim_end_matches("ms");
                if let Ok(ms) = v.trim().parse() {
                    result.replies_ms.push(ms);
                }
            }
        } else if line.starts_with("From ") && result.errors.len() < 5 {
            result.errors.push(cut(line, 200));
        }
    }
    stats.then_some(result)
}

/// `traceroute -n -q 1 -w 1 -m MAX HOST`: one probe per hop, numeric, 1 s wait.
pub fn traceroute_command(host: &Host, max_hops: u32) -> CommandSpec {
    let mut args = vec!["-n".to_string()];
    if matches!(host, Host::Ip(IpAddr::V6(_))) {
        args.push("-6".to_string());
    }
    args.extend([
        "-q".to_string(),
        "1".to_string(),
        "-w".to_string(),
        "1".to_string(),
        "-m".to_string(),
        max_hops.to_string(),
        host.as_arg(),
    ]);
    CommandSpec::new("traceroute", args)
}

/// `tracepath -n -m MAX HOST` (iputils), the fallback.
pub fn tracepath_command(host: &Host, max_hops: u32) -> CommandSpec {
    CommandSpec::new(
        "tracepath",
        ["-n".to_string(), "-m".to_string(), max_hops.to_string(), host.as_arg()],
    )
}

/// Trace the route to `host` through `runner`: `traceroute`, or `tracepath` when it is missing.
pub async fn traceroute(runner: &dyn Runner, host: &Host, max_hops: u32) -> Result<TraceResult, ExecError> {
    let cmd = traceroute_command(host, max_hops);
    let (program, out) = match runner.run(&cmd).await {
        Ok(out) if !missing_program(&out) => ("traceroute", out),
        Ok(_) | Err(ExecError::Failed(_)) => {
            let fallback = tracepath_command(host, max_hops);
            let out = runner.run(&fallback).await.map_err(|e| match e {
                ExecError::Failed(m) if m.contains("not found") => ExecError::Failed(
                    "neither `traceroute` nor `tracepath` is installed on the target (Debian: apt install traceroute)"
                        .to_string(),
                ),
                other => other,
            })?;
            if missing_program(&out) {
                return Err(ExecError::Failed(
                    "neither `traceroute` nor `tracepath` is installed on the target (Debian: apt install traceroute)"
                        .to_string(),
                ));
            }
            ("tracepath", out)
        }
        Err(e) => return Err(e),
    };
    let hops = if program == "traceroute" {
        parse_traceroute(&out.stdout)
    } else {
        parse_tracepath(&out.stdout)
    };
    if hops.is_empty() {
        if out.timed_out {
            return Err(ExecError::Failed(format!("{program} timed out before the first hop")));
        }
        return Err(command_failed(program, &out));
    }
    let target_addr = first_paren(&out.stdout);
    let reached = hops.last().is_some_and(|h| {
        h.note.as_deref() == Some("reached")
            || (h.address.is_some() && (h.address == target_addr || h.address.as_deref() == Some(&host.as_arg())))
    });
    Ok(TraceResult {
        host: host.as_arg(),
        program: program.to_string(),
        max_hops,
        reached,
        hops,
    })
}

/// A program that is not installed: locally an `ExecError` (handled by the caller), over SSH
/// the shell's 127.
fn missing_program(out: &Output) -> bool {
    out.status == Some(127)
}

/// `traceroute to HOST (ADDR), ...` → ADDR.
fn first_paren(stdout: &str) -> Option<String> {
    let first = stdout.lines().next()?;
    let open = first.find('(')?;
    let close = first[open..].find(')')? + open;
    Some(first[open + 1..close].to_string())
}

/// Parse `traceroute -n -q 1` lines: ` 1  192.168.1.1  0.512 ms`, ` 2  *`, ` 3  10.0.0.1  1.2 ms !H`.
pub fn parse_traceroute(stdout: &str) -> Vec<Hop> {
    let mut hops = Vec::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let Some(hop) = words.next().and_then(|w| w.parse::<u32>().ok()) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        let mut h = Hop {
            hop,
            address: None,
            rtt_ms: None,
            note: None,
        };
        let mut i = 0;
        while i < rest.len() {
            let w = rest[i];
            if w == "*" {
            } else if w.starts_with('!') {
                h.note = Some(w.to_string());
            } else if rest.get(i + 1) == Some(&"ms") {
                h.rtt_ms = h.rtt_ms.or(w.parse().ok());
                i += 1;
            } else if h.address.is_none() && w.parse::<IpAddr>().is_ok() {
                h.address = Some(w.to_string());
            }
            i += 1;
        }
        hops.push(h);
    }
    hops
}

/// Parse `tracepath -n` lines: ` 1:  192.168.1.1   0.512ms`, ` 2:  no reply`,
/// ` 3:  10.0.0.1   1.2ms reached`; `N?:` probe lines and the `Resume:` summary are skipped,
/// except ` N?: reply received 8)`: a UDP service on the destination answered the probe itself
/// (rather than an ICMP error coming back), so tracepath stops there and hop N reached it.
pub fn parse_tracepath(stdout: &str) -> Vec<Hop> {
    let mut hops: Vec<Hop> = Vec::new();
    for line in stdout.lines() {
        let trimmed = line.trim_start();
        let Some((num, rest)) = trimmed.split_once(':') else {
            continue;
        };
        let answered = num.ends_with('?') && rest.trim_start().starts_with("reply received");
        let Ok(hop) = num.strip_suffix('?').filter(|_| answered).unwrap_or(num).parse::<u32>() else {
            continue;
        };
        let rest: Vec<&str> = rest.split_whitespace().collect();
        let mut h = Hop {
            hop,
            address: None,
            rtt_ms: None,
            note: None,
        };
        if answered {
            h.note = Some("reached".to_string());
        } else if rest.first() == Some(&"no") {
            h.note = Some("no reply".to_string());
        } else {
            for w in &rest {
                if let Some(ms) = w.strip_suffix("ms").and_then(|v| v.parse().ok()) {
                    h.rtt_ms = Some(ms);
                } else if *w == "reached" {
                    h.note = Some("reached".to_string());
                } else if h.address.is_none() && w.parse::<IpAddr>().is_ok() {
                    h.address = Some(w.to_string());
                }
            }
        }
        // tracepath prints a hop again when the MTU changes: keep the first answer per hop.
        match hops.iter_mut().find(|x| x.hop == hop) {
            Some(existing) if existing.address.is_none() => *existing = h,
            Some(existing) => {
                if h.note.as_deref() == Some("reached") {
                    existing.note = h.note;
                }
            }
            None => hops.push(h),
        }
    }
    hops
}

/// Connect to every port of `ip` at once, each attempt within `timeout`; the connection is
/// closed as soon as it opens (nothing is sent).
pub async fn port_check(ip: IpAddr, ports: &[u16], timeout: Duration) -> Vec<PortState> {
    let attempts = ports.iter().map(|&port| async move {
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, TcpStream::connect(SocketAddr::new(ip, port))).await;
        let elapsed_ms = ms(started.elapsed());
        let (state, error) = match result {
            Ok(Ok(_stream)) => ("open", None),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => ("closed", None),
            Ok(Err(e)) => ("error", Some(e.to_string())),
            Err(_) => ("filtered", None),
        };
        PortState {
            port,
            state: state.to_string(),
            elapsed_ms,
            error,
        }
    });
    futures::future::join_all(attempts).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::net::tests::host;

    #[test]
    fn ping_output_is_parsed() {
        let ok = "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\n\
            64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.030 ms\n\
            64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.051 ms\n\
            \n--- 127.0.0.1 ping statistics ---\n\
            2 packets transmitted, 2 received, 0% packet loss, time 1001ms\n\
            rtt min/avg/max/mdev = 0.030/0.040/0.051/0.010 ms\n";
        let r = parse_ping("127.0.0.1", ok).unwrap();
        assert_eq!((r.transmitted, r.received, r.loss_percent), (2, 2, 0.0));
        assert_eq!(r.replies_ms, vec![0.030, 0.051]);
        assert_eq!(
            (r.rtt_min_ms, r.rtt_avg_ms, r.rtt_max_ms, r.rtt_mdev_ms),
            (Some(0.030), Some(0.040), Some(0.051), Some(0.010))
        );
        assert_eq!(r.address.as_deref(), Some("127.0.0.1"));

        let lost = "PING 10.9.9.9 (10.9.9.9) 56(84) bytes of data.\n\
            From 10.0.0.1 icmp_seq=1 Destination Host Unreachable\n\
            \n--- 10.9.9.9 ping statistics ---\n\
            3 packets transmitted, 0 received, +1 errors, 100% packet loss, time 2030ms\n";
        let r = parse_ping("10.9.9.9", lost).unwrap();
        assert_eq!((r.transmitted, r.received, r.loss_percent), (3, 0, 100.0));
        assert_eq!(r.rtt_avg_ms, None);
        assert_eq!(r.errors, vec!["From 10.0.0.1 icmp_seq=1 Destination Host Unreachable"]);
        assert!(parse_ping("x", "").is_none());
    }

    #[test]
    fn ping_command_is_an_argument_vector() {
        let cmd = ping_command(&host("nas.lan"), 3, 5);
        assert_eq!(cmd.program, "ping");
        assert_eq!(
            cmd.args,
            ["-n", "-c", "3", "-i", "0.2", "-W", "5", "-w", "5", "nas.lan"]
        );
        assert_eq!(
            traceroute_command(&host("::1"), 5).args,
            ["-n", "-6", "-q", "1", "-w", "1", "-m", "5", "::1"]
        );
        assert_eq!(
            tracepath_command(&host("10.0.0.1"), 9).args,
            ["-n", "-m", "9", "10.0.0.1"]
        );
    }

    #[test]
    fn traceroute_output_is_parsed() {
        let out = "traceroute to 10.0.0.9 (10.0.0.9), 5 hops max, 60 byte packets\n \
            1  192.168.1.1  0.512 ms\n \
            2  *\n \
            3  10.0.0.9  1.250 ms !H\n";
        let hops = parse_traceroute(out);
        assert_eq!(hops.len(), 3);
        assert_eq!(hops[0].address.as_deref(), Some("192.168.1.1"));
        assert_eq!(hops[0].rtt_ms, Some(0.512));
        assert_eq!((hops[1].hop, hops[1].address.as_ref(), hops[1].rtt_ms), (2, None, None));
        assert_eq!(hops[2].note.as_deref(), Some("!H"));
        assert_eq!(first_paren(out).as_deref(), Some("10.0.0.9"));

        let tp = " 1?: [LOCALHOST]                      pmtu 65535\n \
            1:  192.168.1.1                                           0.043ms \n \
            1:  192.168.1.1                                           0.040ms pmtu 1500\n \
            2:  no reply\n \
            3:  10.0.0.9                                              0.043ms reached\n     \
            Resume: pmtu 65535 hops 3 back 3 \n";
        let hops = parse_tracepath(tp);
        assert_eq!(hops.len(), 3, "{hops:?}");
        assert_eq!(hops[0].address.as_deref(), Some("192.168.1.1"));
        assert_eq!(hops[1].note.as_deref(), Some("no reply"));
        assert_eq!(hops[2].note.as_deref(), Some("reached"));
        assert_eq!(hops[2].rtt_ms, Some(0.043));

        // A UDP service on the destination answered the probe on hop 2: tracepath stops there.
        let answered = " 1?: [LOCALHOST]                      pmtu 65535\n \
            1:  192.168.1.1                                           0.043ms \n \
            2?: reply received 8)\n     \
            Resume: pmtu 65535 \n";
        let hops = parse_tracepath(answered);
        assert_eq!(hops.len(), 2, "{hops:?}");
        assert_eq!(
            (hops[1].hop, hops[1].address.as_ref(), hops[1].note.as_deref()),
            (2, None, Some("reached"))
        );
    }

    #[tokio::test]
    async fn ports_open_and_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let states = port_check("127.0.0.1".parse().unwrap(), &[open, closed], Duration::from_secs(2)).await;
        assert_eq!(states[0].state, "open");
        assert_eq!(states[1].state, "closed");
    }
}
