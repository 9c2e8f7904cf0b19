//! The `files` and `logs` toolsets against a real tree and the real journald: symlinks and `..`
//! that lead out of a root are refused by the kernel, symlinks that stay inside are followed,
//! deny patterns hold on every component (also behind a symlink), caps are enforced with errors
//! naming them, journal queries find entries written with `systemd-cat`, and `logs_analyze`
//! counts clusters and restart loops. The escape attempts and a journal query also go through
//! MCP on the tailnet harness, with their audit rows.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use serde_json::{Value, json};
use tailopsmcp::audit::{Decision, Outcome};
use tailopsmcp::config::{Config, Overrides};
use tailopsmcp::tools::{Tool, ToolContext, ToolError, ToolOutput};

use crate::support::journald::ensure_journald;
use crate::support::netns::skip_or_fail;
use crate::support::world::World;

const DAVE: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 41));

/// A tree under a fresh directory: `root/` is the configured root, `outside/` is next to it.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("sub/deep")).unwrap();
    std::fs::create_dir_all(root.join(".ssh")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "outside the root\n").unwrap();
    std::fs::write(root.join("notes.txt"), "hello\nworld\n").unwrap();
    std::fs::write(root.join("sub/inner.txt"), "inner file with a needle in it\n").unwrap();
    std::fs::write(root.join("sub/deep/app.log"), "one\nneedle two\nthree\n").unwrap();
    let big: String = (1..=500).map(|i| format!("line {i}\n")).collect();
    std::fs::write(root.join("big.log"), big).unwrap();
    let mut bin = vec![0u8, 1, 2, 255, 254, b'n', b'e', b'e', b'd', b'l', b'e'];
    bin.extend(std::iter::repeat_n(0u8, 100));
    std::fs::write(root.join("blob.dat"), &bin).unwrap();
    std::fs::write(root.join(".ssh/id_ed25519"), "needle PRIVATE KEY\n").unwrap();
    std::fs::write(root.join("server.key"), "needle PRIVATE KEY\n").unwrap();
    // Out of the root: an absolute symlink to /etc, a relative one to the parent, one to a
    // sibling directory.
    symlink("/etc", root.join("x")).unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink("../outside/secret.txt", root.join("escape.txt")).unwrap();
    // Inside the root: allowed.
    symlink("sub", root.join("inside")).unwrap();
    symlink("sub/inner.txt", root.join("inside.txt")).unwrap();
    // Inside, but onto a denied path: the resolved path is checked too.
    symlink(".ssh/id_ed25519", root.join("innocent.txt")).unwrap();
    let fifo = std::ffi::CString::new(root.join("pipe").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    Tree {
        _dir: dir,
        root,
        outside,
    }
}

fn config(extra: &str) -> Arc<Config> {
    Arc::new(Config::from_toml(extra, Path::new("test.toml"), &Overrides::default()).unwrap())
}

fn ctx(config: Arc<Config>) -> ToolContext {
    ToolContext::local(ToolContext::test_caller(), config)
}

fn tool(name: &str) -> Arc<dyn Tool> {
    tailopsmcp::tools::catalog()
        .into_iter()
        .find(|t| t.spec().name == name)
        .unwrap_or_else(|| panic!("no tool {name}"))
}

async fn call(config: &Arc<Config>, name: &str, args: Value) -> Result<ToolOutput, ToolError> {
    let Value::Object(args) = args else { panic!("object") };
    tool(name).call(ctx(config.clone()), args).await
}

fn files_config(t: &Tree) -> Arc<Config> {
    config(&format!("[files]\nroots = [{:?}]\nmax_read_bytes = 4096\n", t.root))
}

fn failed(r: Result<ToolOutput, ToolError>, needle: &str) -> String {
    match r {
        Err(ToolError::Failed(m)) => {
            assert!(m.contains(needle), "`{m}` lacks `{needle}`");
            m
        }
        Err(other) => panic!("expected a failure with `{needle}`, got {other:?}"),
        Ok(out) => panic!("expected a failure with `{needle}`, got {}", out.text),
    }
}

fn invalid(r: Result<ToolOutput, ToolError>, needle: &str) {
    match r {
        Err(ToolError::InvalidArgs(m)) => assert!(m.contains(needle), "`{m}` lacks `{needle}`"),
        Err(other) => panic!("expected invalid arguments with `{needle}`, got {other:?}"),
        Ok(out) => panic!("expected invalid arguments with `{needle}`, got {}", out.text),
    }
}

fn p(root: &Path, rel: &str) -> String {
    format!("{}/{rel}", root.display())
}

#[tokio::test]
async fn symlinks_and_dotdot_cannot_leave_the_root() {
    let t = tree();
    let c = files_config(&t);
    let root = &t.root;
    // The predecessor's escape: a symlink in the tree pointing at /etc.
    for path in [p(root, "x/passwd"), "x/hostname".into(), p(root, "x")] {
        failed(
            call(&c, "files_read", json!({"path": path})).await,
            "resolves outside its root",
        );
    }
    failed(
        call(&c, "files_list", json!({"path": p(root, "x")})).await,
        "resolves outside",
    );
    failed(call(&c, "files_stat", json!({"path": "x"})).await, "resolves outside");
    failed(call(&c, "files_list", json!({"path": "up"})).await, "resolves outside");
    failed(
        call(&c, "files_read", json!({"path": "escape.txt"})).await,
        "resolves outside",
    );
    failed(
        call(&c, "files_tail", json!({"path": "escape.txt"})).await,
        "resolves outside",
    );
    failed(
        call(&c, "files_search", json!({"path": "up", "pattern": "secret"})).await,
        "resolves outside",
    );
    // `..` traversal, relative and absolute.
    failed(
        call(&c, "files_read", json!({"path": "../outside/secret.txt"})).await,
        "resolves outside",
    );
    failed(
        call(
            &c,
            "files_read",
            json!({"path": p(root, "sub/../../outside/secret.txt")}),
        )
        .await,
        "resolves outside",
    );
    failed(
        call(
            &c,
            "files_read",
            json!({"path": p(root, "sub/../../../../../../etc/passwd")}),
        )
        .await,
        "resolves outside",
    );
    // Absolute paths outside every root.
    failed(
        call(&c, "files_read", json!({"path": "/etc/passwd"})).await,
        "outside the allowed roots",
    );
    failed(
        call(&c, "files_read", json!({"path": p(&t.outside, "secret.txt")})).await,
        "outside the allowed roots",
    );
    // A prefix that is not a path component does not count as inside.
    let sibling = format!("{}-evil/x", root.display());
    failed(
        call(&c, "files_stat", json!({"path": sibling})).await,
        "outside the allowed roots",
    );
    // Magic links are refused even where /proc would be reachable: make /proc a root.
    let proc_cfg = config("[files]\nroots = [\"/proc\"]\n");
    failed(
        call(&proc_cfg, "files_read", json!({"path": "/proc/self/root/etc/passwd"})).await,
        "magic link",
    );
    invalid(call(&c, "files_read", json!({"path": ""})).await, "may not be empty");
    invalid(call(&c, "files_read", json!({"path": "a\u{0}b"})).await, "NUL");

    // Symlinks that stay inside are followed.
    let out = call(&c, "files_read", json!({"path": "inside/inner.txt"}))
        .await
        .unwrap();
    assert_eq!(out.structured["content"], "inner file with a needle in it\n");
    assert_eq!(
        out.structured["path"],
        json!(p(root, "sub/inner.txt")),
        "resolved path reported"
    );
    let out = call(&c, "files_read", json!({"path": p(root, "inside.txt")}))
        .await
        .unwrap();
    assert_eq!(out.structured["encoding"], "text");
    let out = call(&c, "files_stat", json!({"path": "inside"})).await.unwrap();
    assert_eq!(out.structured["kind"], "directory");
    // An absolute symlink is refused even when it points inside: RESOLVE_BENEATH does not
    // resolve from `/` (README says so).
    symlink(root.join("sub/inner.txt"), root.join("absolute-inside.txt")).unwrap();
    failed(
        call(&c, "files_read", json!({"path": "absolute-inside.txt"})).await,
        "resolves outside its root",
    );
    // `..` that stays inside is fine.
    let out = call(&c, "files_read", json!({"path": "sub/../notes.txt"}))
        .await
        .unwrap();
    assert_eq!(out.structured["content"], "hello\nworld\n");
    // The root itself.
    let out = call(&c, "files_stat", json!({"path": root.display().to_string()}))
        .await
        .unwrap();
    assert_eq!(out.structured["kind"], "directory");
    assert_eq!(out.structured["path"], json!(root.display().to_string()));
}

#[tokio::test]
async fn a_hard_link_to_a_file_outside_the_root_is_not_read_unless_allowed() {
    let t = tree();
    let root = &t.root;
    // Same file system (one temp dir), so the kernel lets anyone who can read the file link it.
    std::fs::hard_link(t.outside.join("secret.txt"), root.join("sub/linked.txt")).unwrap();
    let c = files_config(&t);

    // Contents: refused by read and tail, skipped (and counted) by a contents search.
    for tool_name in ["files_read", "files_tail"] {
        let m = failed(
            call(&c, tool_name, json!({"path": "sub/linked.txt"})).await,
            "is a regular file with 2 hard links",
        );
        assert!(m.contains("set `[files] allow_hardlinks = true`"), "{m}");
        assert!(!m.contains("outside the root\n"), "{m}");
    }
    let search = json!({"path": root.display().to_string(), "pattern": "outside|needle", "in": "contents"});
    let out = call(&c, "files_search", search.clone()).await.unwrap();
    let hits = out.structured["matches"].to_string();
    assert!(!hits.contains("linked.txt"), "{hits}");
    assert!(hits.contains("inner.txt"), "an ordinary file is searched: {hits}");
    assert_eq!(out.structured["hardlinks_skipped"], 1, "{}", out.structured);
    assert!(
        out.text.contains("1 files with several hard links not read"),
        "{}",
        out.text
    );
    // Metadata: shown, with the link count that says why its contents are not.
    let out = call(&c, "files_stat", json!({"path": "sub/linked.txt"})).await.unwrap();
    assert_eq!(out.structured["links"], 2);
    let out = call(&c, "files_list", json!({"path": "sub"})).await.unwrap();
    let entry = out.structured["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "linked.txt")
        .cloned()
        .unwrap_or_else(|| panic!("{}", out.structured));
    assert_eq!(entry["links"], 2);
    assert!(out.text.contains("linked.txt (2 hard links)"), "{}", out.text);
    // An ordinary file (one link) reads as before.
    let out = call(&c, "files_read", json!({"path": "sub/inner.txt"})).await.unwrap();
    assert_eq!(out.structured["content"], "inner file with a needle in it\n");

    // The log tools read through the same exec::fs and refuse it too.
    let logs = config(&format!("[logs]\nroots = [{root:?}]\n"));
    let m = failed(
        call(&logs, "logs_tail", json!({"path": "sub/linked.txt"})).await,
        "is a regular file with 2 hard links",
    );
    assert!(m.contains("give the file a single name"), "{m}");
    failed(
        call(&logs, "logs_analyze", json!({"path": "sub/linked.txt"})).await,
        "hard links",
    );

    // Allowed by configuration: read like any other file.
    let allowed = config(&format!(
        "[files]\nroots = [{root:?}]\nmax_read_bytes = 4096\nallow_hardlinks = true\n"
    ));
    let out = call(&allowed, "files_read", json!({"path": "sub/linked.txt"}))
        .await
        .unwrap();
    assert_eq!(out.structured["content"], "outside the root\n");
    let out = call(&allowed, "files_tail", json!({"path": "sub/linked.txt"}))
        .await
        .unwrap();
    assert_eq!(out.structured["lines"], json!(["outside the root"]));
    let out = call(&allowed, "files_search", search).await.unwrap();
    assert!(
        out.structured["matches"].to_string().contains("linked.txt"),
        "{}",
        out.structured
    );
    assert_eq!(out.structured["hardlinks_skipped"], 0);

    // Removing the other name makes it an ordinary file again: the count is read at each open.
    std::fs::remove_file(t.outside.join("secret.txt")).unwrap();
    let out = call(&c, "files_read", json!({"path": "sub/linked.txt"})).await.unwrap();
    assert_eq!(out.structured["content"], "outside the root\n");
}

#[tokio::test]
async fn the_servers_own_files_are_refused_under_any_root() {
    let t = tree();
    let root = &t.root;
    std::fs::create_dir_all(root.join("keys")).unwrap();
    // Named so that no deny pattern covers them: only the protected list does.
    std::fs::write(root.join("audit.db"), "SQLite format 3\0rows").unwrap();
    std::fs::write(root.join("audit.db-wal"), "wal").unwrap();
    std::fs::write(root.join("keys/nas_login"), "needle PRIVATE KEY\n").unwrap();
    std::fs::hard_link(root.join("audit.db"), root.join("sub/copy-of-db")).unwrap();
    let text = format!(
        "[files]\nroots = [{root:?}]\n\n[audit]\ndatabase = {:?}\n\n[[target]]\nid = \"nas\"\nkind = \"ssh\"\n\
         [target.ssh]\nhost = \"127.0.0.1\"\nuser = \"ops\"\nkey_file = {:?}\nknown_hosts = \"/dev/null\"\n",
        root.join("audit.db"),
        root.join("keys/nas_login"),
    );
    std::fs::write(root.join("server.toml"), &text).unwrap();
    let c = Arc::new(Config::from_toml(&text, &root.join("server.toml"), &Overrides::default()).unwrap());

    failed(
        call(&c, "files_read", json!({"path": "audit.db"})).await,
        "is this server's own audit database",
    );
    failed(
        call(&c, "files_read", json!({"path": "audit.db-wal"})).await,
        "audit database",
    );
    // A hard link reaches the same inode under another name.
    failed(
        call(&c, "files_read", json!({"path": "sub/copy-of-db"})).await,
        "audit database",
    );
    failed(
        call(&c, "files_read", json!({"path": "keys/nas_login"})).await,
        "is this server's own secret",
    );
    failed(
        call(&c, "files_tail", json!({"path": "server.toml"})).await,
        "is this server's own configuration file",
    );
    // Listings and searches leave them out, and count them as denied.
    let out = call(&c, "files_list", json!({"path": root.display().to_string()}))
        .await
        .unwrap();
    let names: Vec<&str> = out.structured["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for gone in ["audit.db", "audit.db-wal", "server.toml"] {
        assert!(!names.contains(&gone), "{gone} listed: {names:?}");
    }
    assert!(names.contains(&"notes.txt"), "{names:?}");
    assert!(out.structured["denied"].as_u64().unwrap() >= 4, "{}", out.structured);
    let out = call(
        &c,
        "files_search",
        json!({"path": root.display().to_string(), "pattern": "needle|rows|nas_|audit|copy-of", "in": "contents"}),
    )
    .await
    .unwrap();
    let hits = out.structured["matches"].to_string();
    for gone in ["audit.db", "nas_login", "copy-of-db", "server.toml"] {
        assert!(!hits.contains(gone), "{gone} searched: {hits}");
    }
    assert!(hits.contains("inner.txt"), "{hits}");
    // Everything else in the root is still served.
    assert_eq!(
        call(&c, "files_read", json!({"path": "notes.txt"}))
            .await
            .unwrap()
            .structured["content"],
        "hello\nworld\n"
    );
}

#[tokio::test]
async fn kernel_file_systems_are_never_read_even_under_a_root_of_slash() {
    let c = config("[files]\nroots = [\"/\"]\n");
    // The server's own memory and environment (keys and tokens live there).
    for path in [
        "/proc/self/environ",
        "/proc/self/mem",
        "/proc/self/maps",
        "/proc/cpuinfo",
    ] {
        failed(call(&c, "files_read", json!({"path": path})).await, "is on procfs");
    }
    failed(call(&c, "files_list", json!({"path": "/proc"})).await, "is on procfs");
    failed(
        call(&c, "files_stat", json!({"path": "/sys/kernel"})).await,
        "is on sysfs",
    );
    // A walk from `/` does not descend into them.
    let out = call(
        &c,
        "files_search",
        json!({"path": "/", "pattern": "^(cpuinfo|environ|kernel)$", "max_depth": 2, "max_results": 100}),
    )
    .await
    .unwrap();
    let hits = out.structured["matches"].to_string();
    assert!(!hits.contains("/proc/") && !hits.contains("/sys/"), "{hits}");
    // Ordinary files are still read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plain.txt"), "plain\n").unwrap();
    let out = call(&c, "files_read", json!({"path": p(dir.path(), "plain.txt")}))
        .await
        .unwrap();
    assert_eq!(out.structured["content"], "plain\n");
}

#[tokio::test]
async fn a_root_that_goes_through_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("notes.txt"), "hello\n").unwrap();
    symlink(&real, dir.path().join("link")).unwrap();
    let c = config(&format!("[files]\nroots = [{:?}]\n", dir.path().join("link")));
    let m = failed(
        call(&c, "files_read", json!({"path": "notes.txt"})).await,
        "goes through a symlink",
    );
    assert!(m.contains(&format!("resolves to `{}`", real.display())), "{m}");

    // The attack it stops: whoever can write above a root swaps it for a link to `/`.
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("notes.txt"), "shared\n").unwrap();
    let c = config(&format!("[files]\nroots = [{share:?}]\n"));
    assert_eq!(
        call(&c, "files_read", json!({"path": "notes.txt"}))
            .await
            .unwrap()
            .structured["content"],
        "shared\n"
    );
    std::fs::rename(&share, dir.path().join("share.old")).unwrap();
    symlink("/", &share).unwrap();
    failed(
        call(&c, "files_read", json!({"path": p(&share, "etc/hostname")})).await,
        "goes through a symlink",
    );
}

#[tokio::test]
async fn a_symlink_swapped_in_during_reads_never_leaks_outside_content() {
    let t = tree();
    let c = files_config(&t);
    // `flip` alternates between a real directory and a symlink to the outside directory.
    let flip = t.root.join("flip");
    std::fs::create_dir(&flip).unwrap();
    std::fs::write(flip.join("secret.txt"), "inside copy\n").unwrap();
    // `flip-link` is a symlink to the outside directory; the swapper exchanges the two names
    // atomically (renameat2 RENAME_EXCHANGE), so `flip` is alternately each of them.
    symlink(&t.outside, t.root.join("flip-link")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (root, stop) = (t.root.clone(), stop.clone());
        std::thread::spawn(move || {
            let a = std::ffi::CString::new(root.join("flip").as_os_str().as_encoded_bytes()).unwrap();
            let b = std::ffi::CString::new(root.join("flip-link").as_os_str().as_encoded_bytes()).unwrap();
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
                swaps += 1;
            }
            swaps
        })
    };
    let (mut inside, mut escapes) = (0, 0);
    for _ in 0..400 {
        match call(&c, "files_read", json!({"path": "flip/secret.txt"})).await {
            Ok(out) => {
                assert_eq!(out.structured["content"], "inside copy\n", "leaked: {}", out.text);
                inside += 1;
            }
            Err(ToolError::Failed(m)) => {
                assert!(m.contains("resolves outside"), "{m}");
                escapes += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the swapper ran ({swaps} swaps)");
    assert!(
        inside > 0 && escapes > 0,
        "both states were seen: {inside} inside, {escapes} refused"
    );
}

#[tokio::test]
async fn deny_patterns_hold_on_every_component() {
    let t = tree();
    let c = config(&format!("[files]\nroots = [{:?}]\ndeny = [\"*.log\"]\n", t.root));
    failed(
        call(&c, "files_read", json!({"path": ".ssh/id_ed25519"})).await,
        "component `.ssh` matches deny pattern `.ssh`",
    );
    failed(
        call(&c, "files_list", json!({"path": ".ssh"})).await,
        "deny pattern `.ssh`",
    );
    failed(
        call(&c, "files_read", json!({"path": p(&t.root, "server.key")})).await,
        "deny pattern `*.key`",
    );
    failed(
        call(&c, "files_stat", json!({"path": "SERVER.KEY"})).await,
        "deny pattern `*.key`",
    );
    // Behind an innocent name: the resolved path is checked as well.
    failed(
        call(&c, "files_read", json!({"path": "innocent.txt"})).await,
        "component `.ssh` matches deny pattern `.ssh`",
    );
    // A configured pattern adds to the defaults.
    failed(
        call(&c, "files_tail", json!({"path": "big.log"})).await,
        "deny pattern `*.log`",
    );

    let out = call(&c, "files_list", json!({"path": "."})).await.unwrap();
    let names: Vec<&str> = out.structured["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&".ssh") && !names.contains(&"server.key") && !names.contains(&"big.log"));
    assert!(names.contains(&"notes.txt") && names.contains(&"x"), "{names:?}");
    assert_eq!(out.structured["denied"], 3, "{}", out.structured);
    let x = out.structured["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "x")
        .unwrap();
    assert_eq!(
        (x["kind"].as_str(), x["link_target"].as_str()),
        (Some("symlink"), Some("/etc"))
    );

    // Search never enters or reports denied names.
    let out = call(
        &c,
        "files_search",
        json!({"path": ".", "pattern": "needle|PRIVATE", "in": "contents"}),
    )
    .await
    .unwrap();
    let paths: Vec<&str> = out.structured["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec![p(&t.root, "sub/inner.txt")], "{}", out.text);
    // .ssh, server.key, big.log and sub/deep/app.log (`*.log` is configured here).
    assert_eq!(out.structured["denied_skipped"], 4, "{}", out.structured);

    // No roots: everything is refused, saying how to configure them.
    let none = config("");
    failed(
        call(&none, "files_list", json!({"path": "/"})).await,
        "no roots are configured for this toolset: set `[files] roots",
    );
}

#[tokio::test]
async fn reads_are_capped_and_binary_is_base64() {
    let t = tree();
    let c = files_config(&t);
    invalid(
        call(&c, "files_read", json!({"path": "notes.txt", "length": 4097})).await,
        "`length` must be between 1 and 4096, got 4097",
    );
    invalid(
        call(&c, "files_read", json!({"path": "notes.txt", "length": 0})).await,
        "between 1 and 4096",
    );
    invalid(
        call(&c, "files_read", json!({"path": "notes.txt", "colour": 1})).await,
        "unknown field",
    );
    let out = call(&c, "files_read", json!({"path": "notes.txt", "offset": 2, "length": 5}))
        .await
        .unwrap();
    let v = &out.structured;
    assert_eq!(v["content"], "llo\nw");
    assert_eq!(
        (v["size"].as_u64(), v["eof"].as_bool(), v["next_offset"].as_u64()),
        (Some(12), Some(false), Some(7))
    );
    assert_eq!(v["truncated"]["omitted"], 5);
    let out = call(&c, "files_read", json!({"path": "notes.txt", "offset": 7}))
        .await
        .unwrap();
    assert_eq!(out.structured["content"], "orld\n");
    assert_eq!(out.structured["eof"], true);
    assert!(out.structured["truncated"].is_null());
    // Default length is capped by max_read_bytes: big.log is 4392 bytes > 4096.
    let out = call(&c, "files_read", json!({"path": "big.log"})).await.unwrap();
    assert_eq!(out.structured["length"], 4096);
    assert_eq!(out.structured["eof"], false);

    let out = call(&c, "files_read", json!({"path": "blob.dat"})).await.unwrap();
    assert_eq!(out.structured["encoding"], "base64");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(out.structured["content"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, std::fs::read(t.root.join("blob.dat")).unwrap());
    failed(call(&c, "files_tail", json!({"path": "blob.dat"})).await, "binary");
    // A FIFO is refused without blocking; a directory is not a file.
    failed(
        call(&c, "files_read", json!({"path": "pipe"})).await,
        "FIFO, not a regular file",
    );
    failed(
        call(&c, "files_read", json!({"path": "sub"})).await,
        "directory, not a regular file",
    );
    failed(
        call(&c, "files_list", json!({"path": "notes.txt"})).await,
        "not a directory",
    );
    failed(
        call(&c, "files_stat", json!({"path": "missing"})).await,
        "does not exist",
    );

    // Tail: the last lines, with the cap named when out of range.
    let out = call(&c, "files_tail", json!({"path": "big.log", "lines": 3}))
        .await
        .unwrap();
    assert_eq!(out.structured["lines"], json!(["line 498", "line 499", "line 500"]));
    invalid(
        call(&c, "files_tail", json!({"path": "big.log", "lines": 0})).await,
        "between 1 and 2000",
    );
    invalid(
        call(&c, "files_tail", json!({"path": "big.log", "lines": 1_000_000})).await,
        "`lines` must be between 1 and 2000",
    );
    // The window (max_read_bytes = 4096) cannot hold 500 lines: the result says it was cut.
    let out = call(&c, "files_tail", json!({"path": "big.log", "lines": 2000}))
        .await
        .unwrap();
    let lines = out.structured["lines"].as_array().unwrap();
    assert!(lines.len() < 500 && lines.last() == Some(&json!("line 500")));
    assert!(
        out.structured["truncated"]["cap"]
            .as_str()
            .unwrap()
            .contains("4096 bytes")
    );
    invalid(
        call(&c, "files_list", json!({"path": ".", "limit": 1001})).await,
        "between 1 and 1000",
    );
    let out = call(&c, "files_list", json!({"path": ".", "limit": 2})).await.unwrap();
    assert_eq!(out.structured["entries"].as_array().unwrap().len(), 2);
    assert_eq!(out.structured["truncated"]["cap"], "limit=2");
}

#[tokio::test]
async fn search_by_name_and_contents_with_caps() {
    let t = tree();
    let c = files_config(&t);
    let out = call(&c, "files_search", json!({"path": ".", "pattern": r"\.log$"}))
        .await
        .unwrap();
    let paths: Vec<&str> = out.structured["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    // Depth-first in name order; `inside` (a symlink to sub) is not followed.
    assert_eq!(paths, vec![p(&t.root, "big.log"), p(&t.root, "sub/deep/app.log")]);
    let out = call(
        &c,
        "files_search",
        json!({"path": ".", "pattern": r"\.log$", "max_results": 1}),
    )
    .await
    .unwrap();
    assert_eq!(out.structured["matches"].as_array().unwrap().len(), 1);
    assert_eq!(out.structured["stopped"], "max_results=1 reached");
    assert_eq!(out.structured["truncated"]["cap"], "max_results=1 reached");
    let out = call(
        &c,
        "files_search",
        json!({"path": ".", "pattern": r"\.log$", "max_depth": 0}),
    )
    .await
    .unwrap();
    assert_eq!(out.structured["matches"].as_array().unwrap().len(), 1, "{}", out.text);

    let out = call(
        &c,
        "files_search",
        json!({"path": "sub", "pattern": "needle", "in": "contents"}),
    )
    .await
    .unwrap();
    let m = out.structured["matches"].as_array().unwrap();
    assert_eq!(m.len(), 2, "{}", out.text);
    // A directory's files come before its subdirectories.
    assert_eq!(m[0]["path"], json!(p(&t.root, "sub/inner.txt")));
    assert_eq!(m[0]["line"], 1);
    assert_eq!(m[1]["path"], json!(p(&t.root, "sub/deep/app.log")));
    assert_eq!(
        (m[1]["line"].as_u64(), m[1]["text"].as_str()),
        (Some(2), Some("needle two"))
    );
    // The binary blob also holds "needle" but is skipped and counted.
    let out = call(
        &c,
        "files_search",
        json!({"path": ".", "pattern": "needle", "in": "contents"}),
    )
    .await
    .unwrap();
    assert_eq!(out.structured["binary_skipped"], 1, "{}", out.structured);
    let out = call(
        &c,
        "files_search",
        json!({"path": ".", "pattern": "line", "in": "contents", "max_bytes": 100}),
    )
    .await
    .unwrap();
    assert!(out.structured["bytes_scanned"].as_u64().unwrap() <= 100);
    assert!(
        out.structured["stopped"].as_str().unwrap().contains("bytes scanned"),
        "{}",
        out.structured
    );

    invalid(
        call(&c, "files_search", json!({"path": ".", "pattern": "("})).await,
        "not a valid regular expression",
    );
    invalid(
        call(
            &c,
            "files_search",
            json!({"path": ".", "pattern": "a", "max_results": 100000}),
        )
        .await,
        "`max_results` must be between 1 and 1000",
    );
    invalid(
        call(
            &c,
            "files_search",
            json!({"path": ".", "pattern": "a", "in": "everything"}),
        )
        .await,
        "unknown variant",
    );
}

/// A log directory with an app log holding repeated errors and a systemd restart loop.
fn log_tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("log");
    std::fs::create_dir_all(&logs).unwrap();
    let mut text = String::new();
    for i in 0..6 {
        text.push_str(&format!(
            "Nov 21 08:0{i}:00 host app[{}]: ERROR connection to db 10.0.0.{i}:5432 failed after {}ms\n",
            100 + i,
            i * 10
        ));
        text.push_str(&format!(
            "Nov 21 08:0{i}:01 host systemd[1]: web.service: Main process exited, code=exited, status=1/FAILURE\n"
        ));
        text.push_str(&format!(
            "Nov 21 08:0{i}:02 host systemd[1]: web.service: Scheduled restart job, restart counter is at {}.\n",
            i + 1
        ));
        text.push_str(&format!(
            "Nov 21 08:0{i}:03 host systemd[1]: Started web.service - Web app.\n"
        ));
    }
    text.push_str("Nov 21 08:09:00 host app[200]: warning: cache 3f2a1b9c-0d4e-4f5a-8b6c-7d8e9f0a1b2c is stale\n");
    text.push_str("Nov 21 08:09:01 host app[200]: warning: cache 11111111-0d4e-4f5a-8b6c-7d8e9f0a1b2c is stale\n");
    text.push_str("Nov 21 08:09:02 host app[200]: request served\n");
    std::fs::write(logs.join("app.log"), text).unwrap();
    std::fs::write(logs.join("auth.key"), "secret\n").unwrap();
    (dir, logs)
}

#[tokio::test]
async fn log_files_are_tailed_and_analysed_within_the_log_roots() {
    let (_dir, logs) = log_tree();
    let c = config(&format!("[logs]\nroots = [{:?}]\n", logs));
    let out = call(&c, "logs_tail", json!({"path": p(&logs, "app.log"), "lines": 2}))
        .await
        .unwrap();
    assert_eq!(out.structured["lines"].as_array().unwrap().len(), 2);
    assert!(out.structured["lines"][1].as_str().unwrap().ends_with("request served"));
    let out = call(
        &c,
        "logs_tail",
        json!({"path": "app.log", "grep": "Scheduled restart", "lines": 10}),
    )
    .await
    .unwrap();
    assert_eq!(out.structured["lines"].as_array().unwrap().len(), 6);
    assert_eq!(out.structured["lines_available"], 6);
    failed(
        call(&c, "logs_tail", json!({"path": "/etc/passwd"})).await,
        "outside the allowed roots",
    );
    failed(
        call(&c, "logs_tail", json!({"path": "../../../etc/passwd"})).await,
        "resolves outside",
    );
    failed(
        call(&c, "logs_tail", json!({"path": "auth.key"})).await,
        "deny pattern `*.key`",
    );
    invalid(
        call(&c, "logs_tail", json!({"path": "app.log", "lines": 2001})).await,
        "between 1 and 2000",
    );

    let out = call(&c, "logs_analyze", json!({"path": "app.log"})).await.unwrap();
    let a = &out.structured;
    assert_eq!(a["entries"], 27);
    assert_eq!(a["source"], json!(format!("file {}", p(&logs, "app.log"))));
    // 6 db errors + 6 "status=1/FAILURE" exits are errors; 2 stale-cache warnings.
    assert_eq!(
        (a["errors"].as_u64(), a["warnings"].as_u64()),
        (Some(12), Some(2)),
        "{a:#}"
    );
    let db = a["error_clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pattern"] == "ERROR connection to db <ip> failed after <n>ms")
        .unwrap_or_else(|| panic!("{a:#}"));
    assert_eq!(db["count"], 6);
    assert_eq!(db["first"], json!({"time": "Nov 21 08:00:00", "line": 1}));
    assert_eq!(db["last"], json!({"time": "Nov 21 08:05:00", "line": 21}));
    let warn = &a["warning_clusters"][0];
    assert_eq!(
        (warn["pattern"].as_str(), warn["count"].as_u64()),
        (Some("warning: cache <uuid> is stale"), Some(2))
    );
    let web = &a["restarts"][0];
    assert_eq!(web["unit"], "web.service");
    assert_eq!(
        (
            web["started"].as_u64(),
            web["scheduled_restarts"].as_u64(),
            web["failures"].as_u64()
        ),
        (Some(6), Some(6), Some(6))
    );
    assert_eq!(web["max_restart_counter"], 6);
    assert_eq!(web["looping"], true);
    assert!(a["summary"].is_null());
    assert!(out.text.contains("web.service [LOOP]"), "{}", out.text);
    let out = call(&c, "logs_analyze", json!({"path": "app.log", "top": 1}))
        .await
        .unwrap();
    assert_eq!(out.structured["error_clusters"].as_array().unwrap().len(), 1);
    invalid(
        call(&c, "logs_analyze", json!({"path": "app.log", "top": 51})).await,
        "between 1 and 50",
    );
    invalid(
        call(&c, "logs_analyze", json!({"path": "app.log", "unit": "web.service"})).await,
        "cannot be combined with `path`",
    );
}

/// Write `n` entries with `systemd-cat -t IDENT -p PRIORITY`.
fn journal_write(ident: &str, priority: &str, message: &str) {
    let status = Command::new("systemd-cat")
        .args(["-t", ident, "-p", priority, "echo", message])
        .status()
        .expect("run systemd-cat");
    assert!(status.success());
}

fn journal_ready() -> bool {
    if let Err(e) = ensure_journald() {
        skip_or_fail(&format!("journald: {e}"));
        return false;
    }
    if Command::new("systemd-cat").arg("--version").output().is_err() {
        skip_or_fail("systemd-cat not found (package systemd)");
        return false;
    }
    true
}

#[tokio::test]
async fn the_journal_is_queried_by_identifier_priority_and_grep() {
    if !journal_ready() {
        return;
    }
    let ident = format!("tailops-files-{}", uuid::Uuid::new_v4().simple());
    for i in 0..3 {
        journal_write(&ident, "err", &format!("disk sda{i} failed with code {i}"));
    }
    journal_write(&ident, "info", "routine check done");
    journal_write(&ident, "warning", "disk almost full");
    // Wait until journald has all five.
    crate::support::journald::journal_entries(&["-t", &ident]);
    let c = config("");
    let mut all = Value::Null;
    for _ in 0..50 {
        all = call(&c, "logs_journal", json!({"identifier": ident}))
            .await
            .unwrap()
            .structured;
        if all["count"] == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(all["count"], 5, "{all:#}");
    let first = &all["entries"][0];
    assert_eq!(first["identifier"], json!(ident));
    assert_eq!(first["priority"], 3);
    assert_eq!(first["message"], "disk sda0 failed with code 0");
    assert!(chrono::DateTime::parse_from_rfc3339(first["time"].as_str().unwrap()).is_ok());

    let errs = call(&c, "logs_journal", json!({"identifier": ident, "priority": "err"}))
        .await
        .unwrap();
    assert_eq!(errs.structured["count"], 3);
    let warn = call(&c, "logs_journal", json!({"identifier": ident, "priority": "warning"}))
        .await
        .unwrap();
    assert_eq!(warn.structured["count"], 4);
    let grep = call(&c, "logs_journal", json!({"identifier": ident, "grep": "sda[12]"}))
        .await
        .unwrap();
    let msgs: Vec<&str> = grep.structured["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        vec!["disk sda1 failed with code 1", "disk sda2 failed with code 2"]
    );
    let newest = call(&c, "logs_journal", json!({"identifier": ident, "lines": 2}))
        .await
        .unwrap();
    let v = &newest.structured;
    assert_eq!(
        v["entries"][1]["message"], "disk almost full",
        "the newest, oldest first"
    );
    assert_eq!(v["count"], 2);
    // A unit filter: none of these entries belong to a unit.
    let unit = call(
        &c,
        "logs_journal",
        json!({"identifier": ident, "unit": "tailops-nothing.service"}),
    )
    .await
    .unwrap();
    assert_eq!(unit.structured["count"], 0);
    let since = call(
        &c,
        "logs_journal",
        json!({"identifier": ident, "since": "-1h", "until": "now"}),
    )
    .await
    .unwrap();
    assert_eq!(since.structured["count"], 5);

    // Bad input never reaches journalctl.
    invalid(
        call(&c, "logs_journal", json!({"unit": "--all"})).await,
        "not a unit name",
    );
    invalid(
        call(&c, "logs_journal", json!({"unit": "x;id"})).await,
        "not a unit name",
    );
    invalid(
        call(&c, "logs_journal", json!({"identifier": "a b"})).await,
        "not a syslog identifier",
    );
    invalid(call(&c, "logs_journal", json!({"since": "$(id)"})).await, "`since`");
    invalid(
        call(&c, "logs_journal", json!({"priority": "loud"})).await,
        "`priority`",
    );
    invalid(
        call(&c, "logs_journal", json!({"lines": 1001})).await,
        "between 1 and 1000",
    );
    invalid(
        call(&c, "logs_journal", json!({"grep": "(("})).await,
        "not a valid regular expression",
    );

    // Analysis over the journal.
    let out = call(&c, "logs_analyze", json!({"identifier": ident})).await.unwrap();
    let a = &out.structured;
    assert_eq!(
        (a["entries"].as_u64(), a["errors"].as_u64(), a["warnings"].as_u64()),
        (Some(5), Some(3), Some(1))
    );
    assert_eq!(a["error_clusters"][0]["pattern"], "disk sda<n> failed with code <n>");
    assert_eq!(a["error_clusters"][0]["count"], 3);
    assert!(a["source"].as_str().unwrap().contains(&ident));
}

#[test]
fn other_target_kinds_are_refused() {
    // The call pipeline refuses a target of a kind a tool does not declare, before it runs.
    use tailopsmcp::targets::Kind;
    for name in ["files_list", "files_stat", "files_read", "files_tail", "files_search"] {
        let t = tool(name);
        assert_eq!(t.kinds(), [Kind::Local], "{name}");
        assert!(!t.supports(Kind::Docker) && !t.supports(Kind::Ssh), "{name}");
    }
}

/// A server with `extra` config; dave (files:read and logs:read) has a session.
async fn world(extra: &str) -> Option<World> {
    World::builder()
        .user(
            DAVE,
            "dave@example.com",
            json!([{"scopes": ["files:read", "logs:read"]}]),
        )
        .config(extra)
        .session(DAVE)
        .start()
        .await
}

fn text(r: &Value) -> &str {
    r["content"][0]["text"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_attempts_through_mcp_are_refused_and_audited() {
    let t = tree();
    let extra = format!("[files]\nroots = [{:?}]\n", t.root);
    let Some(mut w) = world(&extra).await else { return };
    let attempts = [
        (json!({"path": p(&t.root, "x/passwd")}), "resolves outside its root"),
        (json!({"path": "../outside/secret.txt"}), "resolves outside its root"),
        (
            json!({"path": p(&t.root, "sub/../../outside/secret.txt")}),
            "resolves outside its root",
        ),
        (json!({"path": "/etc/shadow"}), "outside the allowed roots"),
        (json!({"path": ".ssh/id_ed25519"}), "deny pattern `.ssh`"),
        (json!({"path": "server.key"}), "deny pattern `*.key`"),
        (json!({"path": "innocent.txt"}), "deny pattern `.ssh`"),
        (
            json!({"path": "notes.txt", "length": 10_000_000}),
            "`length` must be between 1 and 262144",
        ),
    ];
    for (args, needle) in &attempts {
        let r = w.call_tool("files_read", args.clone()).await;
        assert_eq!(r["isError"], true, "{args}: {r}");
        assert!(text(&r).contains(needle), "{args}: {r}");
        assert!(!text(&r).contains("root:"), "nothing of /etc leaks: {r}");
    }
    let ok = w.call_tool("files_read", json!({"path": "inside/inner.txt"})).await;
    assert_eq!(ok["isError"], false, "{ok}");
    assert_eq!(ok["structuredContent"]["content"], "inner file with a needle in it\n");

    let rows = w
        .server
        .audit_where(attempts.len() + 1, |r| r.tool.as_deref() == Some("files_read"))
        .await;
    assert_eq!(rows.len(), attempts.len() + 1);
    for (row, (args, needle)) in rows.iter().zip(&attempts) {
        assert_eq!(row.decision, Decision::Allow, "{args}");
        assert_eq!(row.outcome, Outcome::Error, "{args}");
        assert_eq!(row.principal.as_deref(), Some("dave@example.com"));
        assert_eq!(row.arguments.as_ref().unwrap()["path"], args["path"]);
        assert!(row.error.as_deref().unwrap_or("").contains(needle), "{row:?}");
    }
    assert_eq!(rows.last().unwrap().outcome, Outcome::Ok);
    // Without the scope: denied before anything runs.
    let r = w.call_tool("system_status", json!({})).await;
    assert_eq!(r["isError"], true);
    assert!(w.server.alive(), "the server keeps serving");
    let _ = &w.net;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_query_through_mcp() {
    if !journal_ready() {
        return;
    }
    let ident = format!("tailops-mcp-{}", uuid::Uuid::new_v4().simple());
    journal_write(&ident, "err", "backup job 17 failed: disk full");
    journal_write(&ident, "info", "backup job 18 started");
    crate::support::journald::journal_entries(&["-t", &ident]);
    let Some(mut w) = world("").await else { return };
    let r = w
        .call_tool("logs_journal", json!({"identifier": ident, "priority": "err"}))
        .await;
    assert_eq!(r["isError"], false, "{r}");
    let entries = r["structuredContent"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{r}");
    assert_eq!(entries[0]["message"], "backup job 17 failed: disk full");
    let bad = w.call_tool("logs_journal", json!({"unit": "--vacuum-size=1"})).await;
    assert_eq!(bad["isError"], true);
    assert!(text(&bad).contains("not a unit name"), "{bad}");
    let rows = w
        .server
        .audit_where(2, |r| r.tool.as_deref() == Some("logs_journal"))
        .await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].decision, rows[0].outcome), (Decision::Allow, Outcome::Ok));
    assert_eq!((rows[1].decision, rows[1].outcome), (Decision::Allow, Outcome::Error));
}

/// Every tool's successful result passes the official Python SDK's check against its output
/// schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_accepts_every_result_against_its_output_schema() {
    let Some(python) = crate::support::pyclient::python_mcp_or_skip() else {
        return;
    };
    if !journal_ready() {
        return;
    }
    let t = tree();
    let (_logdir, logs) = log_tree();
    let extra = format!("[files]\nroots = [{:?}]\n\n[logs]\nroots = [{:?}]\n", t.root, logs);
    let Some(w) = world(&extra).await else { return };
    let ident = format!("tailops-sdk-{}", uuid::Uuid::new_v4().simple());
    journal_write(&ident, "err", "sdk check 1 failed");
    crate::support::journald::journal_entries(&["-t", &ident]);
    let actions = json!([
        {"list_tools": {}},
        {"call": "files_list", "args": {"path": ".", "limit": 3}},
        {"call": "files_stat", "args": {"path": "inside"}},
        {"call": "files_read", "args": {"path": "notes.txt", "length": 3}},
        {"call": "files_read", "args": {"path": "blob.dat"}},
        {"call": "files_tail", "args": {"path": "big.log", "lines": 2}},
        {"call": "files_search", "args": {"path": ".", "pattern": "log$", "max_results": 1}},
        {"call": "files_search", "args": {"path": ".", "pattern": "needle", "in": "contents"}},
        {"call": "logs_tail", "args": {"path": "app.log", "lines": 2, "grep": "ERROR"}},
        {"call": "logs_analyze", "args": {"path": "app.log"}},
        {"call": "logs_journal", "args": {"identifier": ident}},
        {"call": "logs_analyze", "args": {"identifier": ident}}
    ]);
    let (lines, stdout) = w.python(&python, &actions, &[]).await;
    let calls: Vec<&Value> = lines.iter().filter(|l| l["action"] == "call").collect();
    assert_eq!(calls.len(), 11, "{stdout}");
    for c in &calls {
        assert_eq!(c["isError"], false, "{}: {stdout}", c["tool"]);
        assert!(c["structuredContent"].is_object(), "{stdout}");
    }
    assert_eq!(calls[9]["structuredContent"]["count"], 1, "{stdout}");
}

/// `logs_analyze` with `summarize: true`: a client that can sample (the Python SDK answering
/// every `sampling/createMessage` with a fixed text) gets its model's text back marked as
/// model-written, and the request it received carries the computed clusters, not the raw lines;
/// a client without sampling gets `summary: null` and a note, never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_analyze_asks_the_clients_model_for_a_summary_only_when_it_can_sample() {
    let Some(python) = crate::support::pyclient::python_mcp_or_skip() else {
        return;
    };
    let (_logdir, logs) = log_tree();
    let extra = format!("[logs]\nroots = [{:?}]\n", logs);
    let Some(w) = world(&extra).await else { return };
    let reply = "MODEL SAYS: web.service is in a restart loop; check the database at <ip>.";
    let actions = json!([
        {"call": "logs_analyze", "args": {"path": "app.log", "summarize": true}},
        {"call": "logs_analyze", "args": {"path": "app.log"}}
    ]);
    let (lines, stdout) = w.python(&python, &actions, &["--sample", reply]).await;

    // Exactly one sampling request (the second call did not ask), carrying the computed analysis.
    let asked: Vec<&Value> = lines.iter().filter(|l| l["action"] == "sampling").collect();
    assert_eq!(asked.len(), 1, "{stdout}");
    assert_eq!(asked[0]["maxTokens"], 400, "{stdout}");
    assert!(
        asked[0]["systemPrompt"]
            .as_str()
            .is_some_and(|s| s.contains("Use only the data given")),
        "{stdout}"
    );
    let prompt = asked[0]["messages"][0].as_str().unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        prompt.contains("ERROR connection to db <ip> failed after <n>ms"),
        "{prompt}"
    );
    assert!(prompt.contains("warning: cache <uuid> is stale"), "{prompt}");
    assert!(prompt.contains("\"unit\":\"web.service\""), "{prompt}");
    assert!(prompt.contains("\"looping\":true"), "{prompt}");
    assert!(prompt.contains("\"errors\":12"), "{prompt}");
    // Raw lines (addresses, pids, uuids) are not sent: only normalised patterns and counts.
    for raw in ["10.0.0.3", "app[103]", "3f2a1b9c-0d4e", "\"example\""] {
        assert!(!prompt.contains(raw), "{raw} reached the client's model: {prompt}");
    }

    let calls: Vec<&Value> = lines.iter().filter(|l| l["action"] == "call").collect();
    assert_eq!(calls.len(), 2, "{stdout}");
    let a = &calls[0]["structuredContent"];
    assert_eq!(calls[0]["isError"], false, "{stdout}");
    assert_eq!(
        a["summary"],
        json!({"text": reply, "model": "test-model", "note": "written by the client's model (sampling), not computed by tailopsmcp"}),
        "{stdout}"
    );
    assert_eq!(a["errors"], 12, "the computed fields are unchanged: {stdout}");
    let shown = calls[0]["text"][0].as_str().unwrap();
    assert!(
        shown.contains("summary by the client's model test-model (written by the client's model (sampling)")
            && shown.contains(reply),
        "{shown}"
    );
    let b = &calls[1]["structuredContent"];
    assert!(b["summary"].is_null(), "{stdout}");
    assert!(
        b["notes"][0].as_str().unwrap().starts_with("summary: not requested"),
        "{stdout}"
    );

    // A client without the sampling capability: null summary with a note, not an error.
    let (lines, stdout) = w
        .python(
            &python,
            &json!([{"call": "logs_analyze", "args": {"path": "app.log", "summarize": true}}]),
            &[],
        )
        .await;
    assert!(!lines.iter().any(|l| l["action"] == "sampling"), "{stdout}");
    let call = lines
        .iter()
        .find(|l| l["action"] == "call")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(call["isError"], false, "{stdout}");
    assert!(call["structuredContent"]["summary"].is_null(), "{stdout}");
    assert!(
        call["structuredContent"]["notes"][0]
            .as_str()
            .unwrap()
            .contains("the client did not declare the MCP sampling capability"),
        "{stdout}"
    );
    let rows = w
        .server
        .audit_where(3, |r| r.tool.as_deref() == Some("logs_analyze"))
        .await;
    assert!(rows.iter().all(|r| r.outcome == Outcome::Ok), "{rows:#?}");
}
