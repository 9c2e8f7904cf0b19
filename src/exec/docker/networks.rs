//! Networks and volumes, with the containers that use each volume.

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;

use super::containers::{nonempty, short_id, summary_from};
use super::engine::Docker;
use super::model::{NetworkInfo, VolumeInfo};
use crate::exec::ExecError;

impl Docker {
    /// Networks, sorted by name.
    pub async fn networks(&self) -> Result<Vec<NetworkInfo>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let raw = client.list_networks(None).await.map_err(|e| self.map_err(e, None))?;
            let mut out: Vec<NetworkInfo> = raw
                .into_iter()
                .map(|n| {
                    let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
                    NetworkInfo {
                        id: short_id(n.id.as_deref().unwrap_or_default()),
                        name: n.name.unwrap_or_default(),
                        driver: nonempty(n.driver),
                        scope: nonempty(n.scope),
                        internal: n.internal.unwrap_or(false),
                        attachable: n.attachable.unwrap_or(false),
                        subnets: configs.iter().filter_map(|c| nonempty(c.subnet.clone())).collect(),
                        gateways: configs.iter().filter_map(|c| nonempty(c.gateway.clone())).collect(),
                        created: n.created.map(|t| t.to_string()),
                        labels: n.labels.unwrap_or_default().into_iter().collect(),
                    }
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    /// Volumes, sorted by name, each with the containers that mount it.
    pub async fn volumes(&self) -> Result<Vec<VolumeInfo>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let raw = client
                .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
                .await
                .map_err(|e| self.map_err(e, None))?;
            let options = ListContainersOptionsBuilder::new().all(true).build();
            let containers = client
                .list_containers(Some(options))
                .await
                .map_err(|e| self.map_err(e, None))?;
            let mut users: HashMap<String, Vec<String>> = HashMap::new();
            for c in containers {
                let name = summary_from(c.clone()).name;
                for m in c.mounts.unwrap_or_default() {
                    if let Some(v) = nonempty(m.name) {
                        users.entry(v).or_default().push(name.clone());
                    }
                }
            }
            let mut out: Vec<VolumeInfo> = raw
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| {
                    let mut used_by = users.remove(&v.name).unwrap_or_default();
                    used_by.sort();
                    used_by.dedup();
                    VolumeInfo {
                        driver: v.driver,
                        mountpoint: v.mountpoint,
                        created: v.created_at.map(|t| t.to_string()),
                        scope: v.scope.map(|s| s.to_string()).filter(|s| !s.is_empty()),
                        labels: v.labels.into_iter().collect(),
                        used_by,
                        name: v.name,
                    }
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }
}
