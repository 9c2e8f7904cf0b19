//! Recreating a container from a newer image: the plan, the create body that keeps the user's
//! configuration and leaves the old image's defaults to the new one, and the roll-back that puts
//! the old container back when a step after the rename fails.

use std::collections::HashMap;

use bollard::query_parameters::StopContainerOptionsBuilder;

use super::containers::{id_and_name, nonempty, short_id, state_status};
use super::engine::Docker;
use super::model::UpdateReport;
use super::plan::{ApiCall, ContainerAction, action_call, pull_call, remove_call};
use super::refs::{ImageRef, validate_ref};
use crate::exec::ExecError;

/// How [`Docker::update`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateOptions {
    /// Pull the image reference first (otherwise use what the reference names locally now).
    pub pull: bool,
    /// Seconds the old container gets to stop (its own or the engine's default when `None`).
    pub stop_timeout_secs: Option<i64>,
    /// Inspect only; return the plan without changing anything.
    pub dry_run: bool,
}

impl Docker {
    /// Recreates a container from a newer image: pull its image reference (unless `!pull`),
    /// and when the reference now names another image, stop the container, rename it out of
    /// the way, create a new one under its name with the same configuration (values the old
    /// image supplied are left to the new image), connect its other networks, start it if the
    /// old one ran, and remove the old one (its volumes stay, anonymous ones are mounted into
    /// the new container). A failure after the rename puts the old container back.
    pub async fn update(&self, id: &str, options: UpdateOptions) -> Result<UpdateReport, ExecError> {
        validate_ref(id)?;
        let stop_t = self.stop_timeout(options.stop_timeout_secs)?;
        let client = self.bounded(self.client()).await?;
        let (info, full_id, name) = self.bounded(self.find(client, id)).await?;
        let state_before = state_status(&info);
        let running = matches!(state_before.as_str(), "running" | "paused" | "restarting");
        let old_image_id = info.image.clone().unwrap_or_default();
        let reference = info.config.as_ref().and_then(|c| c.image.clone()).unwrap_or_default();
        let image = ImageRef::parse(&reference).map_err(|_| {
            ExecError::Failed(format!(
                "container `{name}` was created from `{reference}`, not from an image reference with a tag: \
                 there is nothing to update it from"
            ))
        })?;
        if reference.starts_with("sha256:")
            || image.name.len() == 64 && image.name.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ExecError::Failed(format!(
                "container `{name}` was created from an image id, not a tag: there is nothing to update it from"
            )));
        }
        if info.host_config.as_ref().and_then(|h| h.auto_remove) == Some(true) {
            return Err(ExecError::Failed(format!(
                "container `{name}` was started with --rm: stopping it would remove it before it could be \
                 recreated; recreate it with its new image yourself"
            )));
        }
        let (_, extra_networks) = networking_for_create(&info);
        let old_name = old_name_for(&name, &full_id);
        let plan = update_plan(&UpdatePlanInput {
            container: &name,
            old_name: &old_name,
            image: &image,
            pull: options.pull,
            running,
            stop_t,
            extra_networks: &extra_networks,
        });
        let mut report = UpdateReport {
            name: name.clone(),
            image: reference.clone(),
            old_container_id: short_id(&full_id),
            new_container_id: None,
            old_image_id: old_image_id.clone(),
            new_image_id: None,
            up_to_date: None,
            recreated: false,
            state_before: state_before.clone(),
            state_after: None,
            plan,
        };
        if options.dry_run {
            return Ok(report);
        }
        if options.pull {
            self.bounded(self.pull_stream(client, &image)).await?;
        }
        let new_image_id = self
            .bounded(self.image_id(client, &reference))
            .await?
            .ok_or_else(|| ExecError::Failed(format!("no image `{reference}` on the engine (pull: false?)")))?;
        report.new_image_id = Some(new_image_id.clone());
        if new_image_id == old_image_id {
            // Only the read-only calls ran.
            let keep = if options.pull { 3 } else { 2 };
            report.plan.truncate(keep);
            report.up_to_date = Some(true);
            report.state_after = Some(state_before);
            return Ok(report);
        }
        report.up_to_date = Some(false);
        let old_image_config = self
            .bounded(async { Ok(client.inspect_image(&old_image_id).await.ok().and_then(|i| i.config)) })
            .await?;
        let body = recreate_body(&info, old_image_config.as_ref());
        let new_id = self
            .recreate(client, &info, body, &extra_networks, &old_name, running, stop_t)
            .await?;
        let after = self.bounded(self.inspect_raw(client, &new_id, &name)).await?;
        report.new_container_id = Some(short_id(&new_id));
        report.recreated = true;
        report.state_after = Some(state_status(&after));
        Ok(report)
    }

    /// The stop → rename → create → connect → start → remove sequence, with the old container
    /// put back when a step after the rename fails. Returns the new container's full id.
    #[allow(clippy::too_many_arguments)]
    async fn recreate(
        &self,
        client: &bollard::Docker,
        info: &bollard::models::ContainerInspectResponse,
        body: bollard::models::ContainerCreateBody,
        extra_networks: &[(String, bollard::models::EndpointSettings)],
        old_name: &str,
        running: bool,
        stop_t: Option<i32>,
    ) -> Result<String, ExecError> {
        let (full_id, name) = id_and_name(info);
        if running {
            let mut o = StopContainerOptionsBuilder::new();
            if let Some(t) = stop_t {
                o = o.t(t);
            }
            self.call(Some(&name), client.stop_container(&full_id, Some(o.build())))
                .await?;
        }
        let o = bollard::query_parameters::RenameContainerOptionsBuilder::new()
            .name(old_name)
            .build();
        if let Err(e) = self.call(Some(&name), client.rename_container(&full_id, o)).await {
            let how = if !running {
                "the old container is unchanged".to_string()
            } else {
                match self.call(Some(&name), client.start_container(&full_id, None)).await {
                    Ok(()) => "the old container was started again".to_string(),
                    Err(e) => format!("starting the old container again failed: {e}"),
                }
            };
            return Err(ExecError::Failed(format!("recreating `{name}` failed: {e}; {how}")));
        }
        let created = async {
            let o = bollard::query_parameters::CreateContainerOptionsBuilder::new()
                .name(&name)
                .build();
            let new = self.call(Some(&name), client.create_container(Some(o), body)).await?;
            Ok::<String, ExecError>(new.id)
        }
        .await;
        let new_id = match created {
            Ok(id) => id,
            Err(e) => return Err(self.roll_back(client, &full_id, &name, None, running, e).await),
        };
        let rest = async {
            for (network, endpoint) in extra_networks {
                let req = bollard::models::NetworkConnectRequest {
                    container: new_id.clone(),
                    endpoint_config: Some(endpoint.clone()),
                };
                self.call(Some(&name), client.connect_network(network, req)).await?;
            }
            if running {
                self.call(Some(&name), client.start_container(&new_id, None)).await?;
            }
            Ok::<(), ExecError>(())
        }
        .await;
        if let Err(e) = rest {
            return Err(self.roll_back(client, &full_id, &name, Some(&new_id), running, e).await);
        }
        let o = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        self.call(Some(&name), client.remove_container(&full_id, Some(o)))
            .await
            .map_err(|e| {
                ExecError::Failed(format!(
                    "recreated `{name}` ({}), but removing the old container ({}) failed: {e}",
                    short_id(&new_id),
                    short_id(&full_id)
                ))
            })?;
        Ok(new_id)
    }

    /// Undo a failed recreate: remove the new container, give the old one its name back and
    /// start it if it ran. Returns the error to report (the cause and how the roll-back went).
    async fn roll_back(
        &self,
        client: &bollard::Docker,
        old_id: &str,
        name: &str,
        new_id: Option<&str>,
        running: bool,
        cause: ExecError,
    ) -> ExecError {
        let mut undo: Vec<String> = Vec::new();
        if let Some(new_id) = new_id {
            let o = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                .force(true)
                .build();
            if let Err(e) = self.call(None, client.remove_container(new_id, Some(o))).await {
                undo.push(format!("removing the new container failed: {e}"));
            }
        }
        let o = bollard::query_parameters::RenameContainerOptionsBuilder::new()
            .name(name)
            .build();
        if let Err(e) = self.call(None, client.rename_container(old_id, o)).await {
            undo.push(format!("renaming the old container back failed: {e}"));
        } else if running && let Err(e) = self.call(None, client.start_container(old_id, None)).await {
            undo.push(format!("starting the old container again failed: {e}"));
        }
        let how = if undo.is_empty() {
            "the old container was put back".to_string()
        } else {
            format!("roll-back incomplete: {}", undo.join("; "))
        };
        ExecError::Failed(format!("recreating `{name}` failed: {cause}; {how}"))
    }
}

/// What [`update_plan`] needs.
struct UpdatePlanInput<'a> {
    container: &'a str,
    old_name: &'a str,
    image: &'a ImageRef,
    pull: bool,
    running: bool,
    stop_t: Option<i32>,
    extra_networks: &'a [(String, bollard::models::EndpointSettings)],
}

fn update_plan(p: &UpdatePlanInput<'_>) -> Vec<ApiCall> {
    let c = p.container;
    let mut plan = vec![ApiCall::new("GET", format!("/containers/{c}/json"))];
    if p.pull {
        plan.push(pull_call(p.image));
    }
    plan.push(ApiCall::new("GET", format!("/images/{}/json", p.image.reference())));
    if p.running {
        plan.push(action_call(ContainerAction::Stop, c, p.stop_t.map(i64::from)));
    }
    plan.push(ApiCall::new(
        "POST",
        format!("/containers/{c}/rename?name={}", p.old_name),
    ));
    plan.push(ApiCall::new(
        "POST",
        format!(
            "/containers/create?name={c} (the old configuration, image {})",
            p.image.reference()
        ),
    ));
    for (network, _) in p.extra_networks {
        plan.push(ApiCall::new(
            "POST",
            format!("/networks/{network}/connect (container {c})"),
        ));
    }
    if p.running {
        plan.push(action_call(ContainerAction::Start, c, None));
    }
    plan.push(remove_call(p.old_name, true, false));
    plan
}

/// The name the old container gets while its replacement takes its name.
fn old_name_for(name: &str, full_id: &str) -> String {
    let base: String = name.chars().take(200).collect();
    format!("{base}-old-{}", short_id(full_id))
}

/// The create body that gives a new container `info`'s configuration on a new image: values
/// equal to what the old image supplied (environment entries, labels, command, entrypoint,
/// working directory, user, volumes, exposed ports, health check, stop signal) are left out so
/// the new image's own apply; the generated hostname (the short id) is left out; anonymous
/// volumes are mounted by name at the same place, so their data carries over.
fn recreate_body(
    info: &bollard::models::ContainerInspectResponse,
    image: Option<&bollard::models::ImageConfig>,
) -> bollard::models::ContainerCreateBody {
    let config = info.config.clone().unwrap_or_default();
    let mut host = info.host_config.clone().unwrap_or_default();
    let (full_id, _) = id_and_name(info);
    let img = image.cloned().unwrap_or_default();

    let differs = |v: Option<Vec<String>>, base: &Option<Vec<String>>| v.filter(|v| Some(v) != base.as_ref());
    let env = config.env.map(|env| {
        let base = img.env.clone().unwrap_or_default();
        env.into_iter().filter(|e| !base.contains(e)).collect::<Vec<_>>()
    });
    let labels = config.labels.map(|labels| {
        let base = img.labels.clone().unwrap_or_default();
        labels
            .into_iter()
            .filter(|(k, v)| base.get(k) != Some(v))
            .collect::<HashMap<_, _>>()
    });
    let minus = |v: Option<Vec<String>>, base: &Option<Vec<String>>| {
        v.map(|v| {
            let base = base.clone().unwrap_or_default();
            v.into_iter().filter(|x| !base.contains(x)).collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
    };
    let hostname = config.hostname.filter(|h| !h.is_empty() && *h != short_id(&full_id));
    let same_str = |v: Option<String>, base: &Option<String>| v.filter(|v| !v.is_empty() && Some(v) != base.as_ref());

    // Anonymous volumes (and volumes the image declared) keep their data: mount them by name.
    let mut covered: Vec<String> = host
        .binds
        .iter()
        .flatten()
        .filter_map(|b| b.split(':').nth(1).map(str::to_string))
        .collect();
    covered.extend(host.mounts.iter().flatten().filter_map(|m| m.target.clone()));
    for m in info.mounts.iter().flatten() {
        if m.typ.as_deref() != Some("volume") {
            continue;
        }
        let (Some(vol), Some(dest)) = (nonempty(m.name.clone()), nonempty(m.destination.clone())) else {
            continue;
        };
        if covered.contains(&dest) {
            continue;
        }
        let ro = if m.rw == Some(false) { ":ro" } else { "" };
        host.binds
            .get_or_insert_with(Vec::new)
            .push(format!("{vol}:{dest}{ro}"));
        covered.push(dest);
    }
    let (networking_config, _) = networking_for_create(info);

    bollard::models::ContainerCreateBody {
        hostname,
        domainname: config.domainname.filter(|d| !d.is_empty()),
        user: same_str(config.user, &img.user),
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports: minus(config.exposed_ports, &img.exposed_ports),
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env,
        cmd: differs(config.cmd, &img.cmd),
        healthcheck: config.healthcheck.filter(|h| Some(h) != img.healthcheck.as_ref()),
        args_escaped: None,
        image: config.image,
        volumes: minus(config.volumes, &img.volumes),
        working_dir: same_str(config.working_dir, &img.working_dir),
        entrypoint: differs(config.entrypoint, &img.entrypoint),
        network_disabled: config.network_disabled,
        on_build: None,
        labels,
        stop_signal: same_str(config.stop_signal, &img.stop_signal),
        stop_timeout: config.stop_timeout,
        shell: differs(config.shell, &img.shell),
        host_config: Some(host),
        networking_config,
    }
}

/// The networks a new container joins: the first at create time (older engines take one), the
/// rest by `connect` afterwards. None for `host`, `none` and `container:…` modes. Endpoint
/// settings keep what the user chose (aliases other than the generated short id, static
/// addresses, links, driver options), not what the engine assigned.
fn networking_for_create(
    info: &bollard::models::ContainerInspectResponse,
) -> (
    Option<bollard::models::NetworkingConfig>,
    Vec<(String, bollard::models::EndpointSettings)>,
) {
    let mode = info
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    if matches!(mode.as_str(), "host" | "none") || mode.starts_with("container:") {
        return (None, Vec::new());
    }
    let (full_id, _) = id_and_name(info);
    let short = short_id(&full_id);
    let mut nets: Vec<(String, bollard::models::EndpointSettings)> = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(net, ep)| {
            let aliases: Vec<String> = ep
                .aliases
                .unwrap_or_default()
                .into_iter()
                .filter(|a| *a != short)
                .collect();
            let chosen = bollard::models::EndpointSettings {
                ipam_config: ep.ipam_config,
                links: ep.links.filter(|l| !l.is_empty()),
                aliases: (!aliases.is_empty()).then_some(aliases),
                driver_opts: ep.driver_opts,
                ..Default::default()
            };
            (net, chosen)
        })
        .collect();
    // The network the container was created on first, then by name.
    nets.sort_by(|a, b| (a.0 != mode).cmp(&(b.0 != mode)).then_with(|| a.0.cmp(&b.0)));
    if nets.is_empty() {
        return (None, Vec::new());
    }
    let first = nets.remove(0);
    let config = bollard::models::NetworkingConfig {
        endpoints_config: Some(HashMap::from([first])),
    };
    (Some(config), nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recreate_keeps_the_users_configuration_and_leaves_image_defaults() {
        let id = format!("abcdef012345{}", "0".repeat(52));
        let anon = "f".repeat(64);
        let raw = serde_json::json!({
            "Id": id,
            "Name": "/web",
            "Image": "sha256:old",
            "Config": {
                "Hostname": "abcdef012345",
                "Image": "app:1",
                "Env": ["PATH=/usr/bin", "MODE=prod"],
                "Cmd": ["serve"],
                "Entrypoint": ["/entry"],
                "Labels": {"from.image": "x", "com.docker.compose.project": "blog"},
                "WorkingDir": "/app",
                "ExposedPorts": {"80/tcp": {}, "9090/tcp": {}},
                "Volumes": {"/data": {}}
            },
            "HostConfig": {
                "Binds": ["named:/srv:ro"],
                "NetworkMode": "front",
                "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
                "Memory": 1048576
            },
            "Mounts": [
                {"Type": "volume", "Name": "named", "Destination": "/srv", "RW": false},
                {"Type": "volume", "Name": anon, "Destination": "/data", "RW": true},
                {"Type": "bind", "Source": "/etc/x", "Destination": "/x", "RW": true}
            ],
            "NetworkSettings": {"Networks": {
                "front": {"Aliases": ["abcdef012345", "web"], "IPAddress": "172.18.0.2", "NetworkID": "n1"},
                "back": {"Aliases": ["abcdef012345"], "IPAMConfig": {"IPv4Address": "10.9.0.5"}}
            }}
        });
        let info: bollard::models::ContainerInspectResponse = serde_json::from_value(raw).unwrap();
        let image: bollard::models::ImageConfig = serde_json::from_value(serde_json::json!({
            "Env": ["PATH=/usr/bin"],
            "Cmd": ["serve"],
            "Entrypoint": ["/entry"],
            "Labels": {"from.image": "x"},
            "WorkingDir": "/app",
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}}
        }))
        .unwrap();
        let body = recreate_body(&info, Some(&image));
        assert_eq!(body.image.as_deref(), Some("app:1"));
        assert_eq!(body.hostname, None, "the generated hostname is not kept");
        assert_eq!(body.env, Some(vec!["MODE=prod".to_string()]));
        assert_eq!((body.cmd.clone(), body.entrypoint.clone()), (None, None));
        assert_eq!(body.working_dir, None);
        assert_eq!(body.exposed_ports, Some(vec!["9090/tcp".to_string()]));
        assert_eq!(body.volumes, None);
        let labels = body.labels.clone().unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels["com.docker.compose.project"], "blog");
        let host = body.host_config.clone().unwrap();
        assert_eq!(
            host.binds,
            Some(vec!["named:/srv:ro".to_string(), format!("{anon}:/data")])
        );
        assert_eq!(host.memory, Some(1_048_576));
        assert_eq!(
            host.restart_policy
                .and_then(|r| r.name)
                .map(|n| n.to_string())
                .as_deref(),
            Some("always")
        );
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints.len(), 1);
        let front = &endpoints["front"];
        assert_eq!(front.aliases, Some(vec!["web".to_string()]));
        assert_eq!(front.ip_address, None, "engine-assigned addresses are not pinned");
        let (_, extra) = networking_for_create(&info);
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].0, "back");
        assert_eq!(extra[0].1.aliases, None);
        assert!(extra[0].1.ipam_config.is_some(), "a static address is kept");

        // Without the old image's configuration everything is kept as it was.
        let body = recreate_body(&info, None);
        assert_eq!(body.cmd, Some(vec!["serve".to_string()]));
        assert_eq!(body.env.map(|e| e.len()), Some(2));

        // `none`/`host` networking: nothing to create or connect.
        let mut none = info.clone();
        none.host_config.as_mut().unwrap().network_mode = Some("none".into());
        assert!(networking_for_create(&none).0.is_none());
        assert_eq!(old_name_for("web", &id), "web-old-abcdef012345");
    }

    #[test]
    fn update_plans_list_every_call() {
        let image = ImageRef::parse("app:1").unwrap();
        let extra = vec![("back".to_string(), bollard::models::EndpointSettings::default())];
        let plan: Vec<String> = update_plan(&UpdatePlanInput {
            container: "web",
            old_name: "web-old-abc",
            image: &image,
            pull: true,
            running: true,
            stop_t: Some(5),
            extra_networks: &extra,
        })
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            plan,
            [
                "GET /containers/web/json",
                "POST /images/create?fromImage=app&tag=1",
                "GET /images/app:1/json",
                "POST /containers/web/stop?t=5",
                "POST /containers/web/rename?name=web-old-abc",
                "POST /containers/create?name=web (the old configuration, image app:1)",
                "POST /networks/back/connect (container web)",
                "POST /containers/web/start",
                "DELETE /containers/web-old-abc?force=true",
            ]
        );
    }
}
