//! [`Stacks`]: the operations on this host's stacks. Changes of one stack never overlap (a lock
//! per stack name); the compose CLI is found once per process.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cli::{ComposeCli, last_line, pull_failures};
use super::files::{MIN_SCRUBBED, cleanup_failed_clone, env_keys, env_values, scan, stack_files};
use super::model::{
    ChangeReport, DeployRequest, GitOrigin, ServiceStatus, StackContainer, StackError, StackFiles, StackListing,
    StackStatus, StackSummary,
};
use super::plan::{Plan, scrub};
use super::validate::{
    parse_git_url, resolve_within, validate_branch, validate_commit, validate_compose_path, validate_env,
    validate_stack_name,
};
use super::{COMPOSE_NAMES, ENV_FILE, META_FILE, REPO_DIR, STAGING_DIR, StacksSettings};
use crate::exec::docker::{ContainerSummary, Docker, DockerSettings};
use crate::exec::{CommandSpec, ExecError, Limits};

static DETECTED: Mutex<Option<(Vec<String>, ComposeCli)>> = Mutex::new(None);

/// One lock per stack name: two changes of one stack never overlap.
static STACK_LOCKS: Mutex<Option<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);

fn stack_lock(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut guard = crate::exec::lock(&STACK_LOCKS);
    guard
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// See [`Stacks::change`].
type Change = (
    StackFiles,
    tokio::sync::OwnedMutexGuard<()>,
    ComposeCli,
    Vec<ContainerSummary>,
    Plan,
);

/// Compose stacks on this host under `settings`.
pub struct Stacks {
    settings: StacksSettings,
    limits: Limits,
    progress: Option<crate::exec::ProgressFn>,
}

/// Reports the steps of one deploy or update (nothing on a dry run or without a reporter).
struct Steps<'a> {
    report: Option<&'a crate::exec::ProgressFn>,
    done: u32,
    total: u32,
}

impl Steps<'_> {
    async fn next(&mut self, message: String) {
        self.done += 1;
        if let Some(f) = self.report {
            f(self.done, self.total.max(self.done), message).await;
        }
    }
}

impl Stacks {
    /// `limits.max_output` caps what each command's output keeps; `settings.timeout` replaces
    /// `limits.timeout` for git and compose commands (clones and image pulls take longer than
    /// a status read).
    pub fn new(settings: StacksSettings, limits: Limits) -> Stacks {
        Stacks {
            settings,
            limits,
            progress: None,
        }
    }

    /// Report each step of `deploy` and `update` (clone, write .env, pull, up, ...) to
    /// `progress` as it starts; dry runs report nothing.
    pub fn with_progress(mut self, progress: Option<crate::exec::ProgressFn>) -> Stacks {
        self.progress = progress;
        self
    }

    fn steps(&self, dry_run: bool, total: u32) -> Steps<'_> {
        Steps {
            report: self.progress.as_ref().filter(|_| !dry_run),
            done: 0,
            total,
        }
    }

    pub fn settings(&self) -> &StacksSettings {
        &self.settings
    }

    fn command_limits(&self) -> Limits {
        Limits {
            timeout: self.settings.timeout,
            max_output: self.limits.max_output,
        }
    }

    fn compose_env(&self) -> Vec<(String, String)> {
        vec![("DOCKER_HOST".to_string(), self.settings.docker_host.clone())]
    }

    fn engine(&self) -> Result<Docker, ExecError> {
        let settings = DockerSettings {
            endpoint: self.settings.docker_host.clone(),
            ..DockerSettings::default()
        };
        Docker::new("local", settings, self.limits)
    }

    /// Containers of every compose project on the engine (all states).
    async fn project_containers(&self) -> Result<Vec<ContainerSummary>, ExecError> {
        let all = self.engine()?.list(true).await?;
        Ok(all.into_iter().filter(|c| c.compose_project.is_some()).collect())
    }

    async fn containers_of(&self, name: &str) -> Result<Vec<ContainerSummary>, ExecError> {
        Ok(self
            .project_containers()
            .await?
            .into_iter()
            .filter(|c| c.compose_project.as_deref() == Some(name))
            .collect())
    }

    /// The compose CLI: the configured command, else `docker compose`, else `docker-compose`.
    /// Found once per process (per configured command).
    pub async fn compose(&self) -> Result<ComposeCli, ExecError> {
        let key = self.settings.compose_command.clone();
        if let Some((k, cli)) = crate::exec::lock(&DETECTED).as_ref()
            && *k == key
        {
            return Ok(cli.clone());
        }
        let candidates: Vec<Vec<String>> = if key.is_empty() {
            vec![
                vec!["docker".to_string(), "compose".to_string()],
                vec!["docker-compose".to_string()],
            ]
        } else {
            vec![key.clone()]
        };
        let limits = Limits {
            timeout: Duration::from_secs(20),
            max_output: 4096,
        };
        let mut tried = Vec::new();
        for argv in candidates {
            let mut args: Vec<String> = argv[1..].to_vec();
            args.extend(["version".to_string(), "--short".to_string()]);
            let cmd = CommandSpec {
                program: argv[0].clone(),
                args,
            };
            let out = crate::exec::process::run_with_env(&cmd, &self.compose_env(), limits).await;
            let version = match &out {
                Ok(o) if o.status == Some(0) => {
                    let v = o.stdout.trim().trim_start_matches('v').to_string();
                    v.starts_with(|c: char| c.is_ascii_digit()).then_some(v)
                }
                _ => None,
            };
            match version {
                Some(version) => {
                    let cli = ComposeCli { argv, version };
                    *crate::exec::lock(&DETECTED) = Some((key, cli.clone()));
                    return Ok(cli);
                }
                None => tried.push(format!(
                    "`{}`: {}",
                    argv.join(" "),
                    match out {
                        Ok(o) => last_line(&o.stderr, &o.stdout),
                        Err(e) => e.to_string(),
                    }
                )),
            }
        }
        Err(ExecError::Failed(format!(
            "no compose CLI found ({}); install the Docker compose plugin or Debian's docker-compose, or set \
             [stacks] compose_command",
            tried.join("; ")
        )))
    }

    /// Stack directories and compose projects on the engine, by name.
    pub async fn list(&self) -> Result<StackListing, ExecError> {
        let dir = self.settings.dir.clone();
        let settings = self.settings.clone();
        let (dir_exists, on_disk) = tokio::task::spawn_blocking(move || scan(&settings))
            .await
            .map_err(|e| ExecError::Failed(format!("scanning {}: {e}", dir.display())))??;
        let (containers, engine_error) = match self.project_containers().await {
            Ok(c) => (c, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let mut stacks: BTreeMap<String, StackSummary> = BTreeMap::new();
        for (name, found) in on_disk {
            let (compose_file, managed, problem) = match &found {
                Ok(f) => (Some(f.compose_file.display().to_string()), f.origin.is_some(), None),
                Err(e) => (None, false, Some(e.clone())),
            };
            stacks.insert(
                name.clone(),
                StackSummary {
                    directory: Some(self.settings.dir.join(&name).display().to_string()),
                    name,
                    compose_file,
                    managed,
                    problem,
                    containers: 0,
                    running: 0,
                    working_dir: None,
                },
            );
        }
        for c in &containers {
            let Some(project) = c.compose_project.clone() else {
                continue;
            };
            let entry = stacks.entry(project.clone()).or_insert_with(|| StackSummary {
                name: project,
                directory: None,
                compose_file: None,
                managed: false,
                problem: None,
                containers: 0,
                running: 0,
                working_dir: None,
            });
            entry.containers += 1;
            if c.state == "running" {
                entry.running += 1;
            }
            if entry.working_dir.is_none() {
                entry.working_dir = c.labels.get("com.docker.compose.project.working_dir").cloned();
            }
        }
        Ok(StackListing {
            dir: self.settings.dir.display().to_string(),
            dir_exists,
            docker_host: self.settings.docker_host.clone(),
            engine_error,
            stacks: stacks.into_values().collect(),
        })
    }

    fn existing(&self, name: &str) -> Result<StackFiles, StackError> {
        validate_stack_name(name).map_err(StackError::Invalid)?;
        match stack_files(&self.settings, name) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(StackError::Invalid(format!(
                "no stack `{name}` in {} (stacks_list shows the stacks)",
                self.settings.dir.display()
            ))),
            Err(e) => Err(StackError::Invalid(e)),
        }
    }

    /// A stack's services (from `compose config --services`) and containers (from the engine).
    ///
    /// A compose project that has containers on the engine but no directory here (started
    /// elsewhere) gets its services and containers from the containers' labels only.
    pub async fn status(&self, name: &str) -> Result<StackStatus, StackError> {
        let files = match self.existing(name) {
            Ok(f) => f,
            Err(e) => {
                validate_stack_name(name).map_err(StackError::Invalid)?;
                let containers = self.containers_of(name).await?;
                if containers.is_empty() || self.settings.dir.join(name).exists() {
                    return Err(e);
                }
                return Ok(engine_only_status(name, &containers));
            }
        };
        let cli = self.compose().await?;
        let cmd = cli.command(
            name,
            &files.compose_file,
            files.env_file.as_deref(),
            &["config", "--services"],
        );
        let out = crate::exec::process::run_with_env(&cmd, &self.compose_env(), self.command_limits()).await;
        let (defined, compose_error): (Vec<String>, Option<String>) = match out {
            Ok(o) if o.status == Some(0) => (
                o.stdout
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
                None,
            ),
            Ok(o) => (Vec::new(), Some(last_line(&o.stderr, &o.stdout))),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let containers = self.containers_of(name).await?;
        let mut services: Vec<ServiceStatus> = defined
            .iter()
            .map(|s| ServiceStatus {
                service: s.clone(),
                defined: true,
                containers: Vec::new(),
            })
            .collect();
        group_by_service(&mut services, &containers, false);
        let env_keys = files.env_file.as_deref().map(env_keys).unwrap_or_default();
        Ok(StackStatus {
            name: name.to_string(),
            directory: Some(files.dir.display().to_string()),
            compose_file: Some(files.compose_file.display().to_string()),
            env_keys,
            origin: files.origin,
            compose: Some(cli.describe()),
            compose_error,
            containers: containers.len(),
            running: containers.iter().filter(|c| c.state == "running").count(),
            services,
        })
    }

    /// Clone (or re-clone) a stack from git, write its `.env` and metadata, and `up -d` it.
    pub async fn deploy(&self, req: DeployRequest, dry_run: bool) -> Result<ChangeReport, StackError> {
        let invalid = StackError::Invalid;
        validate_stack_name(&req.name).map_err(invalid)?;
        let source = parse_git_url(&req.repository, &self.settings.allowed_git_hosts).map_err(invalid)?;
        if req.branch.is_some() && req.commit.is_some() {
            return Err(invalid("give `branch` or `commit`, not both".into()));
        }
        if let Some(b) = &req.branch {
            validate_branch(b).map_err(invalid)?;
        }
        if let Some(c) = &req.commit {
            validate_commit(c).map_err(invalid)?;
        }
        if let Some(p) = &req.compose_file {
            validate_compose_path(p).map_err(invalid)?;
        }
        if let Some(env) = &req.env {
            validate_env(env).map_err(invalid)?;
        }
        let name = req.name.clone();
        let lock = stack_lock(&name);
        let _held = lock.lock().await;

        let dir = self.settings.dir.join(&name);
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(invalid(format!(
                "{} is a symlink; stacks must be directories inside {}",
                dir.display(),
                self.settings.dir.display()
            )));
        }
        let existing = match stack_files(&self.settings, &name) {
            Ok(f) => f,
            Err(e) if dir.join(META_FILE).exists() => {
                // A managed stack whose checkout is broken may be redeployed.
                tracing::debug!("redeploying damaged stack {name}: {e}");
                None
            }
            Err(e) => return Err(invalid(e)),
        };
        let redeploy = dir.join(META_FILE).exists();
        if !redeploy && dir.exists() {
            let why = match &existing {
                Some(_) => "was not deployed from git by this server",
                None => "is not a stack directory",
            };
            return Err(invalid(format!(
                "{} already exists and {why}: remove it first or choose another name",
                dir.display()
            )));
        }
        let before = self.containers_of(&name).await?;
        if !redeploy && let Some(c) = before.first() {
            let from = c
                .labels
                .get("com.docker.compose.project.working_dir")
                .map(|w| format!(" (from {w})"))
                .unwrap_or_default();
            return Err(invalid(format!(
                "a compose project named `{name}` already has containers on the engine{from}: choose another name"
            )));
        }
        let cli = self.compose().await?;

        let mut secrets: Vec<String> = env_values(&dir.join(ENV_FILE));
        if let Some(env) = &req.env {
            secrets.extend(env.values().filter(|v| v.len() >= MIN_SCRUBBED).cloned());
        }
        let mut plan = Plan::new(dry_run, self.command_limits(), secrets);
        let staging = dir.join(STAGING_DIR);
        let repo = dir.join(REPO_DIR);
        let created_dir = !dir.exists();
        let git_env = vec![("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())];
        // clone, [checkout], check, [write .env], write metadata, up, read containers.
        let total = 5 + u32::from(req.commit.is_some()) + u32::from(req.env.is_some());
        let mut steps = self.steps(dry_run, total);

        let result: Result<(), ExecError> = async {
            if !self.settings.dir.exists() {
                plan.mkdir(&self.settings.dir)?;
            }
            if created_dir {
                plan.mkdir(&dir)?;
            }
            if staging.exists() {
                plan.remove_dir(&staging)?;
            }
            let mut clone = vec![
                "-c".to_string(),
                "protocol.allow=never".to_string(),
                "-c".to_string(),
                format!("protocol.{}.allow=always", source.scheme),
                "clone".to_string(),
                "--quiet".to_string(),
            ];
            if let Some(b) = &req.branch {
                clone.extend(["--branch".to_string(), b.clone(), "--single-branch".to_string()]);
            }
            if req.commit.is_some() {
                clone.push("--no-checkout".to_string());
            }
            clone.extend(["--".to_string(), source.url.clone(), staging.display().to_string()]);
            steps.next(format!("git clone {}", source.url)).await;
            plan.run(CommandSpec::new("git", clone), &git_env).await?;
            if let Some(c) = &req.commit {
                steps.next(format!("git checkout {c}")).await;
                let checkout = git_in(
                    &staging,
                    &["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", c],
                );
                plan.run(checkout, &git_env).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            cleanup_failed_clone(&staging, &dir, created_dir);
            return Err(e.into());
        }

        // The commit and compose file, checked in the fresh checkout before it replaces anything.
        let rev = git_in(&staging, &["rev-parse", "HEAD"]);
        steps.next("check the commit and the compose file".to_string()).await;
        let checked: Result<(String, String), StackError> = async {
            let commit = match plan.run(rev, &git_env).await? {
                Some(o) => o.stdout.trim().to_string(),
                None => "(resolved at deploy)".to_string(),
            };
            let compose_rel = match (&req.compose_file, dry_run) {
                (Some(p), _) => p.clone(),
                (None, true) => format!("{{{}}}", COMPOSE_NAMES.join(",")),
                (None, false) => COMPOSE_NAMES
                    .iter()
                    .find(|n| std::fs::symlink_metadata(staging.join(n)).is_ok_and(|m| m.is_file()))
                    .map(|n| n.to_string())
                    .ok_or_else(|| {
                        StackError::Invalid(format!(
                            "the repository has none of {} at its root: give `compose_file`",
                            COMPOSE_NAMES.join(", ")
                        ))
                    })?,
            };
            if !dry_run {
                resolve_within(&staging, &compose_rel).map_err(StackError::Invalid)?;
            }
            Ok((commit, compose_rel))
        }
        .await;
        let (commit, compose_rel) = match checked {
            Ok(v) => v,
            Err(e) => {
                cleanup_failed_clone(&staging, &dir, created_dir);
                return Err(e);
            }
        };

        if repo.exists() {
            plan.remove_dir(&repo)?;
        }
        plan.rename(&staging, &repo)?;
        let env_path = dir.join(ENV_FILE);
        let env_keys: Vec<String> = match &req.env {
            Some(env) => {
                let mut text = String::new();
                for (k, v) in env {
                    text.push_str(&format!("{k}='{v}'\n"));
                }
                let keys: Vec<String> = env.keys().cloned().collect();
                let detail = format!(
                    "write {} (mode 0600, {} keys: {})",
                    env_path.display(),
                    keys.len(),
                    keys.join(", ")
                );
                steps
                    .next(format!("write {} (mode 0600, {} keys)", env_path.display(), keys.len()))
                    .await;
                plan.write(&env_path, &text, detail)?;
                keys
            }
            None => existing
                .as_ref()
                .and_then(|f| f.origin.as_ref().map(|o| o.env_keys.clone()))
                .unwrap_or_default(),
        };
        let origin = GitOrigin {
            url: source.url.clone(),
            branch: req.branch.clone(),
            commit,
            compose_file: compose_rel.clone(),
            env_keys,
            deployed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let meta_path = dir.join(META_FILE);
        steps.next(format!("write {}", meta_path.display())).await;
        let meta_text = serde_json::to_string_pretty(&origin)
            .map_err(|e| ExecError::Failed(format!("metadata does not serialize: {e}")))?;
        plan.write(
            &meta_path,
            &meta_text,
            format!(
                "write {} (mode 0600: repository, branch, commit, compose file, env keys)",
                meta_path.display()
            ),
        )?;
        let env_file = (req.env.is_some() || env_path.exists()).then_some(env_path.as_path());
        let up = cli.command(
            &name,
            &repo.join(&compose_rel),
            env_file,
            &["up", "--detach", "--remove-orphans"],
        );
        steps.next(format!("compose up --detach ({})", cli.describe())).await;
        plan.run(up, &self.compose_env()).await?;
        steps.next("read the stack's containers".to_string()).await;
        self.finish(plan, name, dir, cli, &before).await
    }

    /// What an update or remove of an existing stack starts with: its files, its lock (held
    /// until the change ends), the compose CLI, its containers before, and a plan that scrubs
    /// the values of its `.env` from what it keeps.
    async fn change(&self, name: &str, dry_run: bool) -> Result<Change, StackError> {
        let files = self.existing(name)?;
        let held = stack_lock(name).lock_owned().await;
        let cli = self.compose().await?;
        let before = self.containers_of(name).await?;
        let secrets = files.env_file.as_deref().map(env_values).unwrap_or_default();
        let plan = Plan::new(dry_run, self.command_limits(), secrets);
        Ok((files, held, cli, before, plan))
    }

    /// `pull` (failures are warnings: images built or imported locally have no registry) and
    /// `up -d`.
    pub async fn update(&self, name: &str, dry_run: bool) -> Result<ChangeReport, StackError> {
        let (files, _held, cli, before, mut plan) = self.change(name, dry_run).await?;
        let env = files.env_file.as_deref();
        let pull = cli.command(name, &files.compose_file, env, &["pull", "--ignore-pull-failures"]);
        let mut steps = self.steps(dry_run, 3);
        steps.next(format!("compose pull ({})", cli.describe())).await;
        if let Some(out) = plan.run_tolerant(pull, &self.compose_env()).await? {
            let printed = scrub(&format!("{}\n{}", out.stdout, out.stderr), &plan.secrets);
            let failed = pull_failures(&printed);
            if !failed.is_empty() {
                plan.warnings.extend(
                    failed
                        .into_iter()
                        .map(|(svc, why)| format!("pull failed for {svc} (kept the local image): {why}")),
                );
            } else if out.status != Some(0) {
                plan.warnings.push(format!(
                    "pull failed (kept the local images): {}",
                    last_line("", &printed)
                ));
            }
        }
        let up = cli.command(name, &files.compose_file, env, &["up", "--detach"]);
        steps.next(format!("compose up --detach ({})", cli.describe())).await;
        plan.run(up, &self.compose_env()).await?;
        steps.next("read the stack's containers".to_string()).await;
        self.finish(plan, name.to_string(), files.dir, cli, &before).await
    }

    /// `down` (with `--volumes` only when asked) and, with `delete_files`, the stack directory.
    pub async fn remove(
        &self,
        name: &str,
        volumes: bool,
        delete_files: bool,
        dry_run: bool,
    ) -> Result<ChangeReport, StackError> {
        let (files, _held, cli, before, mut plan) = self.change(name, dry_run).await?;
        let mut sub = vec!["down"];
        if volumes {
            sub.push("--volumes");
        }
        let down = cli.command(name, &files.compose_file, files.env_file.as_deref(), &sub);
        plan.run(down, &self.compose_env()).await?;
        if delete_files {
            plan.remove_dir(&files.dir)?;
        }
        self.finish(plan, name.to_string(), files.dir, cli, &before).await
    }

    async fn finish(
        &self,
        plan: Plan,
        name: String,
        dir: PathBuf,
        cli: ComposeCli,
        before: &[ContainerSummary],
    ) -> Result<ChangeReport, StackError> {
        let after = if plan.dry_run {
            before.to_vec()
        } else {
            self.containers_of(&name).await?
        };
        let mut recreated: Vec<String> = after
            .iter()
            .filter(|c| !before.iter().any(|b| b.id == c.id))
            .filter_map(|c| c.compose_service.clone())
            .collect();
        recreated.sort();
        recreated.dedup();
        Ok(ChangeReport {
            stack: name,
            directory: dir.display().to_string(),
            dry_run: plan.dry_run,
            compose: cli.describe(),
            log: plan.log,
            warnings: plan.warnings,
            containers: after.iter().map(StackContainer::from).collect(),
            recreated,
            plan: plan.steps,
        })
    }
}

/// Status of a project known only from its containers' labels.
fn engine_only_status(name: &str, containers: &[ContainerSummary]) -> StackStatus {
    let label = |key: &str| containers.iter().find_map(|c| c.labels.get(key).cloned());
    let mut services: Vec<ServiceStatus> = Vec::new();
    group_by_service(&mut services, containers, true);
    StackStatus {
        name: name.to_string(),
        directory: label("com.docker.compose.project.working_dir"),
        compose_file: label("com.docker.compose.project.config_files"),
        env_keys: Vec::new(),
        origin: None,
        compose: None,
        compose_error: Some(
            "not in the stacks directory: services and containers from the engine's labels only".into(),
        ),
        containers: containers.len(),
        running: containers.iter().filter(|c| c.state == "running").count(),
        services,
    }
}

/// Each container joins its service's entry in `services`; a service not there yet is added,
/// marked `defined` as given (whether the compose file defines it).
fn group_by_service(services: &mut Vec<ServiceStatus>, containers: &[ContainerSummary], defined: bool) {
    for c in containers {
        let service = c.compose_service.clone().unwrap_or_default();
        match services.iter_mut().find(|s| s.service == service) {
            Some(s) => s.containers.push(c.into()),
            None => services.push(ServiceStatus {
                service,
                defined,
                containers: vec![c.into()],
            }),
        }
    }
}

/// `git -C DIR ARGS...`.
fn git_in(dir: &Path, args: &[&str]) -> CommandSpec {
    let mut words = vec!["-C".to_string(), dir.display().to_string()];
    words.extend(args.iter().map(|a| a.to_string()));
    CommandSpec::new("git", words)
}
