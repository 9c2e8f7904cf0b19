//! Network interfaces (sysinfo, `/sys/class/net`, `/proc/net/dev`) and sockets (`/proc/net/*`
//! with the processes that hold them).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use sysinfo::Networks;

use super::model::{Interface, InterfaceAddress, InterfaceCounters};
use super::processes::{USERS, proc_pids};
use crate::exec::{lock, procfs};
use crate::tailnet::is_tailnet_ip;

/// Every network interface, in kernel index order, with addresses and counters.
pub fn network_interfaces() -> Vec<Interface> {
    let networks = Networks::new_with_refreshed_list();
    let counters = fs::read_to_string("/proc/net/dev")
        .map(|s| parse_proc_net_dev(&s))
        .unwrap_or_default();
    let mut names: BTreeSet<String> = fs::read_dir(SYS_CLASS_NET)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.extend(networks.keys().cloned());
    names.extend(counters.keys().cloned());

    let mut interfaces: Vec<Interface> = names
        .into_iter()
        .map(|name| {
            let dir = Path::new(SYS_CLASS_NET).join(&name);
            let read = |file: &str| read_trimmed(&dir.join(file));
            let mut addresses: Vec<InterfaceAddress> = networks
                .get(&name)
                .map(|n| {
                    n.ip_networks()
                        .iter()
                        .map(|net| InterfaceAddress {
                            address: net.addr,
                            prefix_len: net.prefix,
                            family: if net.addr.is_ipv4() { "ipv4" } else { "ipv6" }.to_string(),
                            tailnet: is_tailnet_ip(net.addr),
                        })
                        .collect()
                })
                .unwrap_or_default();
            addresses.sort_by_key(|a| (a.address.is_ipv6(), a.address));
            addresses.dedup();
            Interface {
                index: read("ifindex").and_then(|s| s.parse().ok()),
                mac: read("address").and_then(|s| mac_address(&s)),
                mtu: read("mtu").and_then(|s| s.parse().ok()),
                oper_state: read("operstate"),
                admin_up: read("flags").and_then(|s| parse_admin_up(&s)),
                tailnet: addresses.iter().any(|a| a.tailnet),
                addresses,
                counters: counters.get(&name).cloned(),
                name,
            }
        })
        .collect();
    interfaces.sort_by(|a, b| (a.index.unwrap_or(u32::MAX), &a.name).cmp(&(b.index.unwrap_or(u32::MAX), &b.name)));
    interfaces
}

/// Sockets from `/proc/net/{tcp,tcp6,udp,udp6}` with their owning processes (found by scanning
/// `/proc/PID/fd` for `socket:[INODE]` links; other users' processes are unreadable unless root).
pub fn sockets(q: &procfs::SocketQuery) -> procfs::SocketList {
    let mut raw = Vec::new();
    for (path, protocol, v6) in procfs::SOCKET_TABLES {
        if q.protocol.is_some_and(|p| p != *protocol) {
            continue;
        }
        if let Ok(text) = fs::read_to_string(path) {
            raw.extend(procfs::parse_proc_net(&text, *protocol, *v6));
        }
    }
    let mut owners = HashMap::new();
    let mut names = HashMap::new();
    let mut unreadable = 0;
    for pid in proc_pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            unreadable += 1;
            continue;
        };
        let mut holds = false;
        for fd in fds.filter_map(Result::ok) {
            if let Some(inode) = fs::read_link(fd.path())
                .ok()
                .and_then(|l| procfs::socket_inode(&l.to_string_lossy()))
            {
                procfs::add_owner(&mut owners, inode, pid);
                holds = true;
            }
        }
        if holds && let Some(comm) = read_trimmed(Path::new(&format!("/proc/{pid}/comm"))) {
            names.insert(pid, comm);
        }
    }
    let users = lock(&USERS).refreshed().clone();
    procfs::assemble_sockets(raw, &owners, &names, &users, unreadable, q)
}

const SYS_CLASS_NET: &str = "/sys/class/net";

/// `/proc/net/dev`: two header lines, then `name: 8 rx fields 8 tx fields`.
fn parse_proc_net_dev(text: &str) -> HashMap<String, InterfaceCounters> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        let v: Vec<u64> = fields.split_whitespace().map_while(|f| f.parse().ok()).collect();
        if v.len() < 16 {
            continue;
        }
        out.insert(
            name.trim().to_string(),
            InterfaceCounters {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            },
        );
    }
    out
}

/// `/sys/class/net/NAME/flags` (`0x1003`) → whether `IFF_UP` is set.
fn parse_admin_up(flags: &str) -> Option<bool> {
    let hex = flags.trim().strip_prefix("0x")?;
    u32::from_str_radix(hex, 16).ok().map(|f| f & 0x1 != 0)
}

/// A hardware address, unless it is empty or all zeros.
fn mac_address(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    (!s.is_empty() && s.chars().any(|c| c.is_ascii_hexdigit() && c != '0')).then_some(s)
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n  \
                    eth0: 43562630    1753    2    5    0     0          0         0   112733    1013    1    3    0     0       0          0\n\
                    tailscale0:12345678901 10 0 0 0 0 0 0 42 1 0 0 0 0 0 0\n  \
                    bad: 1 2 3\n";
        let c = parse_proc_net_dev(text);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.get("eth0"),
            Some(&InterfaceCounters {
                rx_bytes: 43562630,
                rx_packets: 1753,
                rx_errors: 2,
                rx_dropped: 5,
                tx_bytes: 112733,
                tx_packets: 1013,
                tx_errors: 1,
                tx_dropped: 3,
            })
        );
        assert_eq!(c.get("lo").map(|c| c.rx_bytes), Some(3193));
        assert_eq!(
            c.get("tailscale0").map(|c| (c.rx_bytes, c.tx_bytes)),
            Some((12345678901, 42))
        );
    }

    #[test]
    fn interface_files() {
        assert_eq!(parse_admin_up("0x1003\n"), Some(true));
        assert_eq!(parse_admin_up("0x1002"), Some(false));
        assert_eq!(parse_admin_up("garbage"), None);
        assert_eq!(mac_address("00:00:00:00:00:00\n"), None);
        assert_eq!(mac_address(""), None);
        assert_eq!(mac_address("BC:24:11:AA:00:01\n"), Some("bc:24:11:aa:00:01".into()));
    }
}
