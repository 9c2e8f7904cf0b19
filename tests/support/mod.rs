//! Harnesses shared by the integration tests (and the benchmark): tailnet namespaces, the
//! LocalAPI stand-in, the server process, journald, HTTP/MCP clients, and the world builder that
//! puts them together for a test.

pub mod docker;
pub mod host;
pub mod http;
pub mod journald;
pub mod localapi;
pub mod netns;
pub mod pyclient;
pub mod server;
pub mod sshd;
pub mod sysbox;
pub mod tlsca;
pub mod world;
pub mod wrk;

/// Run the integration test `test` (its full path, e.g. `docker::some_test`) again, alone, in a
/// child process with `env` added, and fail unless it passed there. For tests that need an
/// environment variable set (`$CREDENTIALS_DIRECTORY`): this process's environment is shared by
/// every test running in it and is never changed. The test tells it is the child from a
/// variable in `env`.
pub fn rerun_in_child(test: &str, env: &[(&str, &std::ffi::OsStr)]) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed in its child process:\n{stdout}\n{stderr}"
    );
}
