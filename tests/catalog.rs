//! The tool catalog as data: snapshotted (names, schemas, annotations, scopes, risk), with unique
//! names in `<toolset>_<verb>[_<noun>]` form and object schemas. Regenerate the snapshot after an
//! intended change with `UPDATE_SNAPSHOTS=1 cargo test --test integration catalog`.

use std::collections::HashSet;

use serde_json::{Value, json};

fn catalog_json() -> Value {
    let tools: Vec<Value> = tailopsmcp::tools::catalog()
        .iter()
        .map(|t| {
            let s = t.spec();
            json!({
                "name": s.name,
                "title": s.title,
                "description": s.description,
                "requires": s.requires,
                "risk": s.risk,
                "annotations": s.annotations,
                "input_schema": *s.input_schema,
                "output_schema": *s.output_schema,
            })
        })
        .collect();
    json!(tools)
}

#[test]
fn the_catalog_matches_its_snapshot() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/catalog.json");
    let now = serde_json::to_string_pretty(&catalog_json()).unwrap() + "\n";
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(path, &now).unwrap();
        return;
    }
    let before = std::fs::read_to_string(path).expect("tests/snapshots/catalog.json (UPDATE_SNAPSHOTS=1 writes it)");
    assert!(
        before == now,
        "the tool catalog changed; review and run UPDATE_SNAPSHOTS=1 cargo test --test integration catalog"
    );
}

#[test]
fn tool_names_are_unique_and_well_formed() {
    let mut seen = HashSet::new();
    for t in tailopsmcp::tools::catalog() {
        let name = t.spec().name;
        assert!(seen.insert(name), "duplicate tool name {name}");
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !name.starts_with('_')
                && !name.ends_with('_'),
            "{name} is not snake case"
        );
    }
}

#[test]
fn schemas_are_objects_and_annotations_are_consistent() {
    for t in tailopsmcp::tools::catalog() {
        let s = t.spec();
        assert_eq!(
            s.input_schema.get("type"),
            Some(&json!("object")),
            "{} input schema",
            s.name
        );
        assert_eq!(
            s.output_schema.get("type"),
            Some(&json!("object")),
            "{} output schema: structuredContent is an object",
            s.name
        );
        if s.annotations.read_only {
            assert!(
                !s.annotations.destructive,
                "{}: read-only cannot be destructive",
                s.name
            );
        }
        assert!(!s.description.is_empty() && !s.title.is_empty(), "{}", s.name);
    }
}

#[test]
fn every_changing_tool_offers_a_dry_run_and_reports_its_plan() {
    for t in tailopsmcp::tools::catalog() {
        let s = t.spec();
        if s.annotations.read_only {
            continue;
        }
        let props = s.input_schema.get("properties").and_then(Value::as_object);
        assert!(
            props.and_then(|p| p.get("dry_run")).is_some(),
            "{} changes things but takes no `dry_run`",
            s.name
        );
        let out = s.output_schema.get("properties").and_then(Value::as_object);
        assert!(
            out.and_then(|p| p.get("plan")).is_some(),
            "{} changes things but its result has no `plan`",
            s.name
        );
    }
}

#[test]
fn read_only_and_enable_lists_filter_the_catalog() {
    use tailopsmcp::config::ToolsConfig;
    let all = tailopsmcp::tools::catalog();
    let ro = tailopsmcp::tools::select(&ToolsConfig {
        read_only: true,
        ..Default::default()
    })
    .unwrap();
    assert!(!ro.is_empty());
    assert!(ro.iter().all(|t| t.spec().annotations.read_only));
    assert_eq!(ro.len(), all.iter().filter(|t| t.spec().annotations.read_only).count());
    let only = tailopsmcp::tools::select(&ToolsConfig {
        enable: vec!["whoami".into(), "system_status".into()],
        disable: vec!["system_status".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(only.iter().map(|t| t.spec().name).collect::<Vec<_>>(), ["whoami"]);
    let typo = tailopsmcp::tools::select(&ToolsConfig {
        disable: vec!["sytem_status".into()],
        ..Default::default()
    });
    assert_eq!(
        typo.err().as_deref(),
        Some("tools.disable: no tool is named `sytem_status`")
    );
}
