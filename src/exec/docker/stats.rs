//! One sample of a running container's CPU, memory, network, block IO and pids, computed as
//! `docker stats` does.

use std::collections::HashMap;

use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;

use super::containers::{short_id, state_status};
use super::engine::Docker;
use super::model::Stats;
use super::refs::validate_ref;
use crate::exec::ExecError;

impl Docker {
    /// One sample of a running container's CPU, memory, network, block IO and pids (the engine
    /// takes about a second to measure CPU use).
    pub async fn stats(&self, id: &str) -> Result<Stats, ExecError> {
        validate_ref(id)?;
        self.bounded(async {
            let client = self.client().await?;
            let (info, full_id, name) = self.find(client, id).await?;
            let status = state_status(&info);
            if status != "running" {
                return Err(ExecError::Failed(format!(
                    "container `{name}` is not running (status: {status}): no stats to sample"
                )));
            }
            // stream=false without one_shot: the engine takes two samples, so CPU use is known.
            let options = StatsOptionsBuilder::new().stream(false).one_shot(false).build();
            let mut stream = client.stats(&full_id, Some(options));
            let sample = match stream.next().await {
                Some(sample) => sample.map_err(|e| self.map_err(e, Some(id)))?,
                None => return Err(ExecError::Failed(format!("the engine sent no stats for `{name}`"))),
            };
            Ok(stats_from(short_id(&full_id), name, &sample))
        })
        .await
    }
}

fn stats_from(id: String, name: String, s: &bollard::models::ContainerStatsResponse) -> Stats {
    let cpu = s.cpu_stats.as_ref();
    let pre = s.precpu_stats.as_ref();
    let online_cpus = cpu.and_then(|c| {
        c.online_cpus.filter(|n| *n > 0).or_else(|| {
            c.cpu_usage
                .as_ref()?
                .percpu_usage
                .as_ref()
                .and_then(|p| u32::try_from(p.len()).ok())
        })
    });
    let total = |c: Option<&bollard::models::ContainerCpuStats>| c.and_then(|c| c.cpu_usage.as_ref()?.total_usage);
    let cpu_percent = cpu_percent(
        total(cpu),
        total(pre),
        cpu.and_then(|c| c.system_cpu_usage),
        pre.and_then(|c| c.system_cpu_usage),
        online_cpus.unwrap_or(1),
    );
    let mem = s.memory_stats.as_ref();
    let memory_usage_bytes = mem.and_then(|m| m.usage.map(|u| memory_without_cache(u, m.stats.as_ref())));
    let memory_limit_bytes = mem.and_then(|m| m.limit).filter(|l| *l > 0);
    let memory_percent = match (memory_usage_bytes, memory_limit_bytes) {
        (Some(u), Some(l)) => Some(u as f64 / l as f64 * 100.0),
        _ => None,
    };
    let (mut rx, mut tx) = (0u64, 0u64);
    for n in s.networks.iter().flat_map(|m| m.values()) {
        rx = rx.saturating_add(n.rx_bytes.unwrap_or(0));
        tx = tx.saturating_add(n.tx_bytes.unwrap_or(0));
    }
    let (mut read, mut write) = (0u64, 0u64);
    let entries = s
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref());
    for e in entries.into_iter().flatten() {
        let v = e.value.unwrap_or(0);
        match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read = read.saturating_add(v),
            Some("write") => write = write.saturating_add(v),
            _ => {}
        }
    }
    Stats {
        id,
        name,
        read_at: s.read.as_ref().map(|t| t.to_string()),
        cpu_percent,
        online_cpus,
        memory_usage_bytes,
        memory_limit_bytes,
        memory_percent,
        net_rx_bytes: rx,
        net_tx_bytes: tx,
        block_read_bytes: read,
        block_write_bytes: write,
        pids: s.pids_stats.as_ref().and_then(|p| p.current),
    }
}

/// `docker stats`' CPU formula: the container's share of the host's CPU time between two
/// samples, times the number of CPUs. `None` without a previous sample.
fn cpu_percent(
    total: Option<u64>,
    pre_total: Option<u64>,
    system: Option<u64>,
    pre_system: Option<u64>,
    cpus: u32,
) -> Option<f64> {
    let (total, system, pre_system) = (total?, system?, pre_system?);
    if pre_system == 0 || system <= pre_system {
        return None;
    }
    let cpu_delta = total.saturating_sub(pre_total.unwrap_or(0));
    Some(cpu_delta as f64 / (system - pre_system) as f64 * f64::from(cpus) * 100.0)
}

/// `docker stats`' memory figure: usage minus inactive page cache (cgroup v1 or v2 key).
fn memory_without_cache(usage: u64, stats: Option<&HashMap<String, u64>>) -> u64 {
    let Some(stats) = stats else { return usage };
    if let Some(v) = stats.get("total_inactive_file")
        && *v < usage
    {
        return usage - v;
    }
    if let Some(v) = stats.get("inactive_file")
        && *v < usage
    {
        return usage - v;
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory() {
        assert_eq!(cpu_percent(Some(200), Some(100), Some(2000), Some(1000), 2), Some(20.0));
        assert_eq!(cpu_percent(Some(100), Some(100), Some(2000), Some(1000), 4), Some(0.0));
        assert_eq!(cpu_percent(Some(200), None, Some(2000), Some(0), 2), None);
        assert_eq!(cpu_percent(Some(200), Some(100), Some(1000), Some(1000), 2), None);
        assert_eq!(cpu_percent(Some(200), Some(100), None, Some(1000), 2), None);
        let v1: HashMap<String, u64> = [("total_inactive_file".to_string(), 300)].into();
        let v2: HashMap<String, u64> = [("inactive_file".to_string(), 100)].into();
        assert_eq!(memory_without_cache(1000, Some(&v1)), 700);
        assert_eq!(memory_without_cache(1000, Some(&v2)), 900);
        assert_eq!(memory_without_cache(50, Some(&v2)), 50);
        assert_eq!(memory_without_cache(1000, None), 1000);
    }

    #[test]
    fn stats_sample() {
        let raw = serde_json::json!({
            "read": "2026-11-21T06:00:01Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 3000}, "system_cpu_usage": 20000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1000}, "system_cpu_usage": 10000, "online_cpus": 2},
            "memory_stats": {"usage": 1000, "limit": 4000, "stats": {"inactive_file": 200}},
            "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 5},
                {"major": 8, "minor": 0, "op": "Write", "value": 7},
                {"major": 8, "minor": 0, "op": "total", "value": 12}
            ]},
            "pids_stats": {"current": 3}
        });
        let sample: bollard::models::ContainerStatsResponse = serde_json::from_value(raw).unwrap();
        let s = stats_from("abc".into(), "n".into(), &sample);
        assert_eq!(s.cpu_percent, Some(40.0));
        assert_eq!(s.memory_usage_bytes, Some(800));
        assert_eq!(s.memory_percent, Some(20.0));
        assert_eq!((s.net_rx_bytes, s.net_tx_bytes), (11, 22));
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (5, 7));
        assert_eq!(s.pids, Some(3));
        assert_eq!(s.read_at.as_deref(), Some("2026-11-21T06:00:01Z"));
    }
}
