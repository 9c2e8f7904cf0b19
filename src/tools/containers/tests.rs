//! Unit tests of the `containers` toolset: declarations, argument checks before any engine
//! call, plans, `since` values and caps.

use super::*;
use crate::tools::ToolOutput;
use crate::tools::testing::{self, invalid};
use serde_json::{Value, json};

async fn call(name: &str, args: Value) -> Result<ToolOutput, ToolError> {
    testing::call(tools(), name, args).await
}

#[test]
fn specs_follow_the_conventions() {
    let names: Vec<&str> = tools().iter().map(|t| t.spec().name).collect();
    assert_eq!(
        names,
        [
            "containers_list",
            "containers_inspect",
            "containers_logs",
            "containers_stats",
            "containers_start",
            "containers_stop",
            "containers_restart",
            "containers_pause",
            "containers_unpause",
            "containers_remove",
            "containers_images",
            "containers_image_pull",
            "containers_update",
            "containers_networks",
            "containers_volumes"
        ]
    );
    for t in tools() {
        let s = t.spec();
        let Requirement::Scope(scope) = s.requires else {
            panic!("{}", s.name)
        };
        assert_eq!(scope.area, Area::Containers, "{}", s.name);
        let (level, risk) = match s.name {
            "containers_remove" | "containers_update" => (Level::Admin, Risk::High),
            "containers_image_pull"
            | "containers_start"
            | "containers_stop"
            | "containers_restart"
            | "containers_pause"
            | "containers_unpause" => (Level::Control, Risk::Moderate),
            _ => (Level::Read, Risk::Low),
        };
        assert_eq!((scope.level, s.risk), (level, risk), "{}", s.name);
        assert_eq!(s.annotations.read_only, level == Level::Read, "{}", s.name);
        assert_eq!(
            s.annotations.destructive,
            matches!(s.name, "containers_remove" | "containers_update"),
            "{}",
            s.name
        );
        let props = s.input_schema["properties"].as_object().unwrap();
        assert!(props.contains_key("target"), "{}", s.name);
        assert_eq!(props.contains_key("dry_run"), !s.annotations.read_only, "{}", s.name);
        assert_eq!(s.input_schema["additionalProperties"], json!(false), "{}", s.name);
        assert!(s.description.contains("Runs on `docker` targets only"), "{}", s.name);
    }
}

#[tokio::test]
async fn bad_arguments_are_refused_before_the_target_is_looked_at() {
    // `local` is not a docker target: had validation not come first, the error would say so.
    for bad in ["../x", "a;rm -rf /", "", "-rm", "x/y", "x y", "wé"] {
        for t in [
            "containers_inspect",
            "containers_logs",
            "containers_stats",
            "containers_start",
            "containers_stop",
            "containers_remove",
            "containers_update",
        ] {
            invalid(call(t, json!({"container": bad})).await, "invalid container name or id");
        }
    }
    invalid(
        call("containers_inspect", json!({"container": "a".repeat(300)})).await,
        "at most 255",
    );
    invalid(
        call("containers_logs", json!({"container": "web", "lines": 1_000_000})).await,
        "`lines` must be between 1 and 10000",
    );
    invalid(
        call("containers_logs", json!({"container": "web", "lines": 0})).await,
        "between 1 and 10000",
    );
    invalid(
        call("containers_logs", json!({"container": "web", "max_bytes": 0})).await,
        "`max_bytes`",
    );
    invalid(
        call("containers_logs", json!({"container": "web", "since": "yesterday"})).await,
        "`since`",
    );
    invalid(
        call("containers_logs", json!({"container": "web", "grep": ""})).await,
        "`grep`",
    );
    invalid(
        call("containers_list", json!({"limit": 501})).await,
        "between 1 and 500",
    );
    invalid(
        call("containers_list", json!({"name": "a\nb"})).await,
        "control characters",
    );
    invalid(
        call("containers_images", json!({"limit": 0})).await,
        "between 1 and 500",
    );
    invalid(
        call("containers_volumes", json!({"limit": 100000})).await,
        "between 1 and 500",
    );
    invalid(call("containers_list", json!({"colour": 1})).await, "unknown field");
    invalid(
        call("containers_start", json!({"container": "web", "timeout_secs": 5})).await,
        "unknown field",
    );
    invalid(
        call("containers_image_pull", json!({"image": "UPPER/case"})).await,
        "invalid image reference",
    );
    invalid(
        call("containers_image_pull", json!({"image": "x;rm -rf /"})).await,
        "invalid image reference",
    );
    // Valid arguments reach the engine, which `local` has none of (the call pipeline never
    // runs these tools there).
    for (t, args) in [
        ("containers_list", json!({})),
        ("containers_restart", json!({"container": "web", "dry_run": true})),
    ] {
        match call(t, args).await {
            Err(ToolError::Internal(m)) => assert!(m.contains("target `local` is a local target"), "{m}"),
            other => panic!("{t}: {:?}", other.map(|o| o.text)),
        }
    }
}

#[test]
fn image_references() {
    let ok = |s: &str, name: &str, tag: &str| {
        let r = ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!((r.name.as_str(), r.tag.as_str()), (name, tag), "{s}");
    };
    ok("nginx", "nginx", "latest");
    ok("nginx:1.25-alpine", "nginx", "1.25-alpine");
    ok("library/nginx:1", "library/nginx", "1");
    ok("ghcr.io/org/app:v2", "ghcr.io/org/app", "v2");
    ok("127.0.0.1:5000/tops/busybox:v1", "127.0.0.1:5000/tops/busybox", "v1");
    ok("localhost/x", "localhost/x", "latest");
    ok(
        "my-registry.lan:443/a__b/c.d/e--f",
        "my-registry.lan:443/a__b/c.d/e--f",
        "latest",
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    ok(&format!("nginx@{digest}"), "nginx", &digest);
    ok(&format!("nginx:1@{digest}"), "nginx", &digest);
    assert_eq!(ImageRef::parse("nginx").unwrap().reference(), "nginx:latest");
    for bad in [
        "",
        "Nginx",
        "../x",
        "x/../y",
        "x//y",
        "-x",
        "x-",
        "x:",
        "x:-t",
        "x y",
        "x;rm",
        "x@sha256:zz",
        "x@md5",
        "bad_host.:5000/x",
        "host:port/x",
        "x/.y",
        "x/y?tag",
        &"a".repeat(256),
        &format!("x:{}", "t".repeat(129)),
    ] {
        assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn plans_name_the_exact_calls() {
    assert_eq!(
        docker::action_call(ContainerAction::Restart, "web", Some(5)).to_string(),
        "POST /containers/web/restart?t=5"
    );
    assert_eq!(
        docker::action_call(ContainerAction::Pause, "web", Some(5)).to_string(),
        "POST /containers/web/pause"
    );
    assert_eq!(
        docker::remove_call("web", false, false).to_string(),
        "DELETE /containers/web"
    );
    assert_eq!(
        docker::remove_call("web", true, true).to_string(),
        "DELETE /containers/web?force=true&v=true"
    );
    assert_eq!(
        docker::pull_call(&ImageRef::parse("nginx").unwrap()).to_string(),
        "POST /images/create?fromImage=nginx&tag=latest"
    );
}

#[test]
fn since_values() {
    let now = 1_800_000_000;
    assert_eq!(parse_since_at("15m", now).unwrap(), now - 900);
    assert_eq!(parse_since_at("2h", now).unwrap(), now - 7200);
    assert_eq!(parse_since_at("1d", now).unwrap(), now - 86_400);
    assert_eq!(parse_since_at("0s", now).unwrap(), now);
    assert_eq!(parse_since_at("2026-11-21T06:00:00Z", now).unwrap(), 1_795_240_800);
    for bad in [
        "",
        "m",
        "-5m",
        "+5m",
        "5w",
        "5",
        "99999999999999999d",
        "1970-01-01T00:00:00-01:00 ",
        "5\u{10FFFF}",
        "\u{e9}",
        "1\u{301}",
    ] {
        assert!(parse_since_at(bad, now).is_err(), "{bad:?}");
    }
}

#[test]
fn caps() {
    let (v, total, t) = capped(vec![1, 2, 3], 2);
    assert_eq!((v, total), (vec![1, 2], 3));
    assert_eq!(
        t,
        Some(Truncated {
            cap: "limit=2".into(),
            omitted: Some(1)
        })
    );
    assert_eq!(capped(vec![1], 2).2, None);
    assert_eq!(human_bytes(1536), "1.5 KiB");
}
