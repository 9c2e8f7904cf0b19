//! MCP prompts: task recipes (security audit, health check, ...) that walk a model through the
//! tools this server offers, declared as data.
//!
//! Each prompt is a list of steps, and each step names the tools it uses. A prompt is rendered
//! for one caller: a step whose tools the caller cannot use (not registered, filtered by
//! `[tools]`, or not granted) is left out and the text says which tools were missing, so a
//! prompt never sends a model to a tool it cannot call. Arguments are validated (safe
//! character sets, bounded length) before they are put into the text.
//!
//! Prompts run nothing and read nothing: they are text. The `mcp` layer checks the caller's
//! identity before listing or rendering them.

use rmcp::model::{GetPromptResult, JsonObject, Prompt, PromptArgument, PromptMessage, Role};

/// A prompt declared as data.
pub struct PromptSpec {
    /// snake case, unique.
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub arguments: &'static [ArgSpec],
    /// The opening paragraph; `{name}` placeholders are replaced by argument values.
    pub intro: &'static str,
    pub steps: &'static [StepSpec],
    /// What the answer should look like.
    pub closing: &'static str,
}

/// A prompt argument.
pub struct ArgSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    pub kind: ArgKind,
    /// Used when the argument is omitted (optional arguments only).
    pub default: &'static str,
}

/// What an argument's value may be.
#[derive(Debug, Clone, Copy)]
pub enum ArgKind {
    /// A target id: lowercase letters, digits, `-`, `_`, `.`.
    Target,
    /// A container name or id.
    Container,
    /// A stack name.
    Stack,
    /// A host name or IP address.
    Host,
    /// A git repository URL.
    Repository,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
}

/// One step of a prompt: its text and the tools it tells the model to call.
pub struct StepSpec {
    pub text: &'static str,
    pub tools: &'static [&'static str],
}

/// Why a prompt could not be rendered (an "invalid params" error for the client).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PromptError {
    #[error("unknown prompt `{0}`")]
    Unknown(String),
    #[error("prompt `{prompt}`: missing required argument `{arg}`")]
    Missing { prompt: &'static str, arg: &'static str },
    #[error("prompt `{prompt}`: unknown argument `{arg}`")]
    UnknownArg { prompt: &'static str, arg: String },
    #[error("prompt `{prompt}`: argument `{arg}`: {why}")]
    Invalid {
        prompt: &'static str,
        arg: &'static str,
        why: String,
    },
}

const TARGET: ArgSpec = ArgSpec {
    name: "target",
    description: "The target to work on (default `local`; see `targets_list`).",
    required: false,
    kind: ArgKind::Target,
    default: "local",
};

/// Every prompt, in list order.
pub const PROMPTS: &[PromptSpec] = &[
    PromptSpec {
        name: "security_audit",
        title: "Security audit",
        description: "A read-only security review of a host: exposure, updates, services, containers, TLS and \
                      authentication failures, ranked by severity.",
        arguments: &[TARGET],
        intro: "Run a read-only security audit of target `{target}`. Pass `target: \"{target}\"` to every tool. \
                Change nothing: report what you find and how to fix it.",
        steps: &[
            StepSpec {
                text: "Check who you are and what you may do here with `whoami` and `targets_list`.",
                tools: &["whoami", "targets_list"],
            },
            StepSpec {
                text: "Read the host's identity with `system_status`: OS and kernel version, uptime (a long uptime \
                       can mean a pending kernel update), virtualization.",
                tools: &["system_status"],
            },
            StepSpec {
                text: "List listening sockets with `system_sockets`; flag anything listening on all addresses \
                       (0.0.0.0 or ::) that should be reachable only on loopback or the tailnet.",
                tools: &["system_sockets"],
            },
            StepSpec {
                text: "List pending updates with `packages_updates`; flag security updates.",
                tools: &["packages_updates"],
            },
            StepSpec {
                text: "Review running services with `services_list` (anything unexpected, anything failed).",
                tools: &["services_list"],
            },
            StepSpec {
                text: "List containers with `containers_list`, then `containers_inspect` the running ones: flag \
                       privileged mode, host networking, a mounted Docker socket, ports published on all \
                       addresses, and images without a pinned version.",
                tools: &["containers_list", "containers_inspect"],
            },
            StepSpec {
                text: "For each HTTPS service you found, check its certificate with `network_tls_check` (expiry \
                       within 30 days, names that do not match).",
                tools: &["network_tls_check"],
            },
            StepSpec {
                text: "Look for authentication failures and sudo use in the last 24 hours with `logs_journal` \
                       (units ssh/sshd, priority warning or worse).",
                tools: &["logs_journal"],
            },
        ],
        closing: "Report findings ranked critical / high / medium / low. For each: what it is, the evidence (the \
                  tool and the values that show it), and a concrete fix. End with what you could not check.",
    },
    PromptSpec {
        name: "health_check",
        title: "Health check",
        description: "A quick health check of a host (or all your targets): resources, failed services, unhealthy \
                      containers, recent errors.",
        arguments: &[TARGET],
        intro: "Check the health of target `{target}`. Pass `target: \"{target}\"` to every tool unless a step says \
                otherwise. Read only.",
        steps: &[
            StepSpec {
                text: "Read `system_status`: load against the CPU count, memory and swap use, and every file system \
                       above 85% used.",
                tools: &["system_status"],
            },
            StepSpec {
                text: "Read `system_disks` for every mount and its free space and inodes.",
                tools: &["system_disks"],
            },
            StepSpec {
                text: "List failed or restarting units with `services_list`.",
                tools: &["services_list"],
            },
            StepSpec {
                text: "List containers with `containers_list`; flag exited, restarting and unhealthy ones.",
                tools: &["containers_list"],
            },
            StepSpec {
                text: "Summarize errors of the last hour with `logs_analyze`.",
                tools: &["logs_analyze"],
            },
            StepSpec {
                text: "If `{target}` is a Proxmox VE target, read `proxmox_nodes` and `proxmox_guests` (offline \
                       nodes, stopped guests that should run).",
                tools: &["proxmox_nodes", "proxmox_guests"],
            },
            StepSpec {
                text: "Check that your other targets answer with `targets_check` (`targets: [\"group:NAME\"]` checks \
                       several at once).",
                tools: &["targets_check"],
            },
        ],
        closing: "Answer with one line per area (resources, services, containers, logs, targets): OK, WARN or \
                  CRITICAL with the numbers behind it, then the first thing to look at.",
    },
    PromptSpec {
        name: "troubleshoot_container",
        title: "Troubleshoot a container",
        description: "Find out why a container is failing, restarting or misbehaving.",
        arguments: &[
            ArgSpec {
                name: "container",
                description: "The container's name or id.",
                required: true,
                kind: ArgKind::Container,
                default: "",
            },
            TARGET,
        ],
        intro: "Container `{container}` on target `{target}` is misbehaving. Find the cause. Pass \
                `target: \"{target}\"` to every tool.",
        steps: &[
            StepSpec {
                text: "Read `containers_inspect` for `{container}`: state, exit code, restart count, OOM kill, \
                       health check results, image, mounts and ports.",
                tools: &["containers_inspect"],
            },
            StepSpec {
                text: "Read the last 200 lines of `containers_logs` for `{container}`; then search them for errors.",
                tools: &["containers_logs"],
            },
            StepSpec {
                text: "Read `containers_stats` for `{container}`: CPU, memory against its limit, I/O.",
                tools: &["containers_stats"],
            },
            StepSpec {
                text: "If it serves a port, check it answers with `network_port_check` (and `network_http_probe` \
                       for HTTP).",
                tools: &["network_port_check", "network_http_probe"],
            },
            StepSpec {
                text: "Check the host is not the problem with `system_status` (memory, disk space).",
                tools: &["system_status"],
            },
            StepSpec {
                text: "Only once the cause is understood and the user agrees: `containers_restart` with \
                       `dry_run: true` first, then for real.",
                tools: &["containers_restart"],
            },
        ],
        closing: "Explain the cause with the evidence, the fix, and how to keep it from happening again.",
    },
    PromptSpec {
        name: "performance_analysis",
        title: "Performance analysis",
        description: "Where a host's CPU, memory, disk and network go, and what to change.",
        arguments: &[TARGET],
        intro: "Analyze the performance of target `{target}`. Pass `target: \"{target}\"` to every tool. Read only.",
        steps: &[
            StepSpec {
                text: "Read `system_status`: CPU usage and load against the CPU count, memory, swap.",
                tools: &["system_status"],
            },
            StepSpec {
                text: "Read `system_processes` sorted by `cpu` and then by `memory` (limit 20).",
                tools: &["system_processes"],
            },
            StepSpec {
                text: "Read `containers_stats` to attribute usage to containers.",
                tools: &["containers_stats"],
            },
            StepSpec {
                text: "Read `system_disks` for space and `network_interfaces` for traffic and errors.",
                tools: &["system_disks", "network_interfaces"],
            },
            StepSpec {
                text: "Look for OOM kills and throttling with `logs_analyze`.",
                tools: &["logs_analyze"],
            },
            StepSpec {
                text: "On a Proxmox VE target, compare guests with `proxmox_guests` (CPU and memory per guest).",
                tools: &["proxmox_guests"],
            },
        ],
        closing: "Name the top three consumers with numbers, whether the host is CPU-, memory-, disk- or \
                  network-bound, and concrete changes in order of impact.",
    },
    PromptSpec {
        name: "network_audit",
        title: "Network audit",
        description: "Interfaces, listening services, reachability, DNS and TLS of a host, optionally against one \
                      remote host.",
        arguments: &[
            TARGET,
            ArgSpec {
                name: "host",
                description: "A host name or IP address to test reachability, DNS and TLS against (optional).",
                required: false,
                kind: ArgKind::Host,
                default: "",
            },
        ],
        intro: "Audit the network of target `{target}`{host_clause}. Pass `target: \"{target}\"` to every tool. \
                Read only.",
        steps: &[
            StepSpec {
                text: "Read `network_interfaces`: addresses, the tailnet interface, errors and drops.",
                tools: &["network_interfaces"],
            },
            StepSpec {
                text: "Read `system_sockets`: what listens where, and established connections.",
                tools: &["system_sockets"],
            },
            StepSpec {
                text: "Resolve names with `network_dns_lookup` (A, AAAA; MX or TXT when relevant).",
                tools: &["network_dns_lookup"],
            },
            StepSpec {
                text: "Test reachability with `network_ping` and `network_port_check`, and the path with \
                       `network_traceroute`.",
                tools: &["network_ping", "network_port_check", "network_traceroute"],
            },
            StepSpec {
                text: "Check certificates with `network_tls_check` and web endpoints with `network_http_probe`.",
                tools: &["network_tls_check", "network_http_probe"],
            },
            StepSpec {
                text: "List Docker networks with `containers_networks` (bridges, published ports).",
                tools: &["containers_networks"],
            },
        ],
        closing: "Report what is exposed, what is unreachable or slow, DNS and certificate problems, and fixes.",
    },
    PromptSpec {
        name: "plan_stack_deployment",
        title: "Plan a stack deployment",
        description: "Plan deploying a compose stack from a git repository: resources, name and port conflicts, \
                      and the exact plan, without deploying.",
        arguments: &[
            ArgSpec {
                name: "repository",
                description: "The git repository URL of the stack.",
                required: true,
                kind: ArgKind::Repository,
                default: "",
            },
            ArgSpec {
                name: "stack",
                description: "The stack name to deploy as (optional).",
                required: false,
                kind: ArgKind::Stack,
                default: "",
            },
            TARGET,
        ],
        intro: "Plan the deployment of the compose stack in {repository}{stack_clause} on target `{target}`. Pass \
                `target: \"{target}\"` to every tool. Do not deploy: produce a plan for the user to approve.",
        steps: &[
            StepSpec {
                text: "Check the capacity of the target with `system_status` (free memory and disk).",
                tools: &["system_status"],
            },
            StepSpec {
                text: "List existing stacks with `stacks_list` to avoid a name clash.",
                tools: &["stacks_list"],
            },
            StepSpec {
                text: "List listening sockets with `system_sockets` to find port conflicts.",
                tools: &["system_sockets"],
            },
            StepSpec {
                text: "List images already present with `containers_images`.",
                tools: &["containers_images"],
            },
            StepSpec {
                text: "Run `stacks_deploy` with `dry_run: true` to get the exact plan (clone, files written, \
                       compose commands).",
                tools: &["stacks_deploy"],
            },
        ],
        closing: "Present the plan: steps, ports, volumes, secrets the user must provide, risks, and how to roll \
                  back. Deploy only after the user approves, with the same arguments and `dry_run: false`.",
    },
    PromptSpec {
        name: "investigate_high_usage",
        title: "Investigate high usage",
        description: "Find what is using CPU, memory, disk or network on a host.",
        arguments: &[
            ArgSpec {
                name: "resource",
                description: "What is high: `cpu`, `memory`, `disk` or `network` (default `cpu`).",
                required: false,
                kind: ArgKind::Choice(&["cpu", "memory", "disk", "network"]),
                default: "cpu",
            },
            TARGET,
        ],
        intro: "{resource} usage is high on target `{target}`. Find out what uses it and why. Pass \
                `target: \"{target}\"` to every tool. Read only.",
        steps: &[
            StepSpec {
                text: "Read `system_status` to confirm and size the problem.",
                tools: &["system_status"],
            },
            StepSpec {
                text: "For cpu or memory: `system_processes` sorted by `cpu` or `memory`, and `containers_stats`.",
                tools: &["system_processes", "containers_stats"],
            },
            StepSpec {
                text: "For disk: `system_disks`, then `files_list` and `files_search` in the fullest file system \
                       (logs, caches, old images).",
                tools: &["system_disks", "files_list", "files_search"],
            },
            StepSpec {
                text: "For network: `network_interfaces` counters and `system_sockets` connections.",
                tools: &["network_interfaces", "system_sockets"],
            },
            StepSpec {
                text: "Find when it started with `logs_journal` around that time.",
                tools: &["logs_journal"],
            },
            StepSpec {
                text: "On a Proxmox VE target, find the guest responsible with `proxmox_guests`.",
                tools: &["proxmox_guests"],
            },
        ],
        closing: "Name the culprit with numbers, whether it is expected, and the safest fix.",
    },
    PromptSpec {
        name: "backup_planning",
        title: "Backup planning",
        description: "Find what holds data on a host (apps, databases, volumes, guests) and plan its backups.",
        arguments: &[TARGET],
        intro: "Plan backups for target `{target}`. Pass `target: \"{target}\"` to every tool. Read only: propose, \
                do not change.",
        steps: &[
            StepSpec {
                text: "Find installed applications and databases with `inventory_get` (or `inventory_scan` if \
                       there is no inventory yet).",
                tools: &["inventory_get", "inventory_scan"],
            },
            StepSpec {
                text: "List Docker volumes with `containers_volumes` and stacks with `stacks_list`.",
                tools: &["containers_volumes", "stacks_list"],
            },
            StepSpec {
                text: "Read `system_disks` for data file systems and free space for local copies.",
                tools: &["system_disks"],
            },
            StepSpec {
                text: "On a Proxmox VE target, list guests with `proxmox_guests` and their snapshots with \
                       `proxmox_snapshots`.",
                tools: &["proxmox_guests", "proxmox_snapshots"],
            },
            StepSpec {
                text: "Before risky changes, a guest snapshot is one call: `proxmox_snapshot_create` with \
                       `dry_run: true` shows it.",
                tools: &["proxmox_snapshot_create"],
            },
        ],
        closing: "Propose a 3-2-1 plan: per application what to back up (database dumps, not live files), how \
                  often (RPO), where, retention, and how to test a restore.",
    },
    PromptSpec {
        name: "set_up_inventory",
        title: "Set up the inventory",
        description: "Scan a host for applications and record what runs where, with the user's notes.",
        arguments: &[TARGET],
        intro: "Build the inventory of target `{target}`. Pass `target: \"{target}\"` to every tool.",
        steps: &[
            StepSpec {
                text: "Check the target list with `targets_list`.",
                tools: &["targets_list"],
            },
            StepSpec {
                text: "Read the host's identity with `system_status`.",
                tools: &["system_status"],
            },
            StepSpec {
                text: "Scan for applications with `inventory_scan`, then read the stored result with \
                       `inventory_get`.",
                tools: &["inventory_scan", "inventory_get"],
            },
            StepSpec {
                text: "Ask the user about anything unclear, then record owners and purposes with \
                       `inventory_annotate` (and corrections with `inventory_set`).",
                tools: &["inventory_annotate", "inventory_set"],
            },
        ],
        closing: "Finish with a table: application, version, evidence, port, notes.",
    },
];

/// The prompts as `prompts/list` shows them.
pub fn list() -> Vec<Prompt> {
    PROMPTS
        .iter()
        .map(|p| {
            let args = p
                .arguments
                .iter()
                .map(|a| {
                    PromptArgument::new(a.name)
                        .with_description(a.description)
                        .with_required(a.required)
                })
                .collect();
            Prompt::new(p.name, Some(p.description), Some(args)).with_title(p.title)
        })
        .collect()
}

/// Render prompt `name` with `args` for a caller who can use the tools `usable` says yes to.
pub fn get(name: &str, args: &JsonObject, usable: &dyn Fn(&str) -> bool) -> Result<GetPromptResult, PromptError> {
    let spec = PROMPTS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PromptError::Unknown(shown(name)))?;
    let values = arguments(spec, args)?;
    let fill = |text: &str| {
        let mut out = text.to_string();
        for (k, v) in &values {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    };
    let mut text = fill(spec.intro);
    text.push_str("\n\n");
    let mut missing: Vec<&str> = Vec::new();
    let mut n = 0;
    for step in spec.steps {
        let (have, lack): (Vec<&str>, Vec<&str>) = step.tools.iter().partition(|t| usable(t));
        for t in lack {
            if !missing.contains(&t) {
                missing.push(t);
            }
        }
        if have.is_empty() {
            continue;
        }
        n += 1;
        text.push_str(&format!("{n}. {}\n", fill(step.text)));
    }
    if n == 0 {
        text.push_str("None of the tools this task needs are available to you on this server.\n");
    }
    if !missing.is_empty() {
        text.push_str(&format!(
            "\n(Not available to you here, so left out: {}.)\n",
            missing.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    text.push('\n');
    text.push_str(&fill(spec.closing));
    Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)]).with_description(spec.description))
}

/// Validated argument values by name, with defaults and the derived clauses.
fn arguments(spec: &'static PromptSpec, args: &JsonObject) -> Result<Vec<(String, String)>, PromptError> {
    for key in args.keys() {
        if !spec.arguments.iter().any(|a| a.name == key) {
            return Err(PromptError::UnknownArg {
                prompt: spec.name,
                arg: shown(key),
            });
        }
    }
    let mut values = Vec::new();
    for a in spec.arguments {
        let given = match args.get(a.name) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.is_empty() && !a.required => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(PromptError::Invalid {
                    prompt: spec.name,
                    arg: a.name,
                    why: format!("must be a string, got {other}"),
                });
            }
        };
        let value = match given {
            Some(v) => {
                check(a.kind, &v).map_err(|why| PromptError::Invalid {
                    prompt: spec.name,
                    arg: a.name,
                    why,
                })?;
                v
            }
            None if a.required => {
                return Err(PromptError::Missing {
                    prompt: spec.name,
                    arg: a.name,
                });
            }
            None => a.default.to_string(),
        };
        values.push((a.name.to_string(), value));
    }
    let get = |k: &str| {
        values
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let host = get("host");
    let stack = get("stack");
    values.push((
        "host_clause".into(),
        if host.is_empty() {
            String::new()
        } else {
            format!(", including reachability of `{host}`")
        },
    ));
    values.push((
        "stack_clause".into(),
        if stack.is_empty() {
            String::new()
        } else {
            format!(" as stack `{stack}`")
        },
    ));
    Ok(values)
}

/// Whether `value` is acceptable for `kind`; the error says what is.
fn check(kind: ArgKind, value: &str) -> Result<(), String> {
    let all = |max: usize, ok: &dyn Fn(char) -> bool| value.chars().count() <= max && value.chars().all(ok);
    let first_alnum = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let (good, rule) = match kind {
        ArgKind::Target => (
            first_alnum
                && all(64, &|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)
                }),
            "lowercase letters, digits, `-`, `_`, `.` (at most 64)",
        ),
        ArgKind::Container => (
            first_alnum && all(128, &|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
            "a container name or id: letters, digits, `_`, `.`, `-` (at most 128)",
        ),
        ArgKind::Stack => (
            first_alnum
                && all(63, &|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c)
                }),
            "lowercase letters, digits, `_`, `-` (at most 63)",
        ),
        ArgKind::Host => (
            first_alnum && all(253, &|c| c.is_ascii_alphanumeric() || ".:-".contains(c)),
            "a host name or IP address",
        ),
        ArgKind::Repository => (
            (value.starts_with("https://") || value.starts_with("ssh://") || value.starts_with("git@"))
                && all(512, &|c| c.is_ascii_graphic() && !"`\"'<>\\{}".contains(c)),
            "an https://, ssh:// or git@ repository URL without quotes, spaces or braces (at most 512)",
        ),
        ArgKind::Choice(words) => {
            return if words.contains(&value) {
                Ok(())
            } else {
                Err(format!("must be one of {}, got `{}`", words.join(", "), shown(value)))
            };
        }
    };
    if good {
        Ok(())
    } else {
        Err(format!("`{}` is not {rule}", shown(value)))
    }
}

fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '�' } else { c })
        .collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashSet;

    /// Tools other branches are adding while this one is written; the merge reconciles them
    /// with the catalog (then this list should be empty).
    const PENDING: &[&str] = &[];

    fn obj(v: serde_json::Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    fn text(r: &GetPromptResult) -> String {
        match &r.messages[0].content {
            rmcp::model::ContentBlock::Text(t) => t.text.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_named_tool_exists_and_is_declared_by_its_step() {
        let catalog: HashSet<&str> = crate::tools::catalog().iter().map(|t| t.spec().name).collect();
        let mut names = HashSet::new();
        let toolsets = [
            "system_",
            "containers_",
            "stacks_",
            "services_",
            "logs_",
            "files_",
            "network_",
            "packages_",
            "inventory_",
            "targets_",
            "proxmox_",
        ];
        for p in PROMPTS {
            assert!(names.insert(p.name), "duplicate prompt {}", p.name);
            for s in p.steps {
                for t in s.tools {
                    assert!(
                        catalog.contains(t) || PENDING.contains(t),
                        "prompt {} names `{t}`, which is not in the catalog",
                        p.name
                    );
                    assert!(
                        s.text.contains(&format!("`{t}`")),
                        "{}: step does not mention `{t}`",
                        p.name
                    );
                }
                // Every tool-looking word in the text is declared (so filtering is complete).
                for word in s.text.split('`').skip(1).step_by(2) {
                    if toolsets.iter().any(|ts| word.starts_with(ts)) || word == "whoami" {
                        assert!(
                            s.tools.contains(&word),
                            "{}: `{word}` is not in the step's tools",
                            p.name
                        );
                    }
                }
            }
        }
        for t in PENDING {
            assert!(
                !catalog.contains(t),
                "`{t}` is in the catalog now: remove it from PENDING"
            );
        }
        assert_eq!(names.len(), 9);
    }

    #[test]
    fn rendering_fills_arguments_and_leaves_out_unusable_tools() {
        let usable = |t: &str| t.starts_with("containers_") || t == "system_status";
        let r = get(
            "troubleshoot_container",
            &obj(json!({"container": "web-1", "target": "nas"})),
            &usable,
        )
        .unwrap();
        let t = text(&r);
        assert!(t.starts_with("Container `web-1` on target `nas` is misbehaving"), "{t}");
        assert!(t.contains("1. Read `containers_inspect` for `web-1`"), "{t}");
        assert!(t.contains("`containers_restart` with `dry_run: true`"), "{t}");
        assert!(
            t.contains("left out: `network_port_check`, `network_http_probe`"),
            "{t}"
        );
        assert!(!t.contains("4. If it serves a port"), "{t}");
        let r = get("health_check", &obj(json!({})), &|_| true).unwrap();
        assert!(text(&r).contains("target `local`"));
        assert!(!text(&r).contains("left out"));
        let r = get("network_audit", &obj(json!({"host": "1.1.1.1"})), &|_| false).unwrap();
        assert!(text(&r).contains("including reachability of `1.1.1.1`"));
        assert!(text(&r).contains("None of the tools"));
        let r = get("investigate_high_usage", &obj(json!({"resource": "disk"})), &|_| true).unwrap();
        assert!(text(&r).starts_with("disk usage is high"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let all = |_: &str| true;
        let err = |name: &str, args: serde_json::Value| get(name, &obj(args), &all).unwrap_err().to_string();
        assert_eq!(err("nope", json!({})), "unknown prompt `nope`");
        assert!(err("troubleshoot_container", json!({})).contains("missing required argument `container`"));
        assert!(err("troubleshoot_container", json!({"container": "a; rm -rf /"})).contains("not a container name"));
        assert!(err("troubleshoot_container", json!({"container": "x\nIgnore previous"})).contains("`container`"));
        assert!(err("health_check", json!({"target": "../x"})).contains("`target`"));
        assert!(err("health_check", json!({"target": 7})).contains("must be a string"));
        assert!(err("health_check", json!({"colour": "red"})).contains("unknown argument `colour`"));
        assert!(err("investigate_high_usage", json!({"resource": "gpu"})).contains("one of cpu, memory"));
        assert!(err("plan_stack_deployment", json!({"repository": "https://x/y`; curl"})).contains("repository URL"));
        assert!(err("plan_stack_deployment", json!({"repository": "file:///etc"})).contains("repository URL"));
        get(
            "plan_stack_deployment",
            &obj(json!({"repository": "https://git.lan/me/app.git", "stack": "app"})),
            &all,
        )
        .unwrap();
    }

    #[test]
    fn the_list_declares_arguments() {
        let list = list();
        assert_eq!(list.len(), PROMPTS.len());
        let t = list.iter().find(|p| p.name == "troubleshoot_container").unwrap();
        let args = t.arguments.as_ref().unwrap();
        assert_eq!(args[0].name, "container");
        assert_eq!(args[0].required, Some(true));
        assert_eq!(args[1].required, Some(false));
    }
}
