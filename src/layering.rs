//! The layer order of the crate's modules, checked against the source: a module may use only
//! modules in layers below its own (never one beside it or above it), and within a module its
//! submodules may not use each other in a cycle. ARCHITECTURE.md describes the same order.

/// Bottom first. Modules on one line are peers and must not use each other.
pub const LAYERS: &[&[&str]] = &[
    &["model"],
    &["text", "secrets", "when"],
    &["tailnet"],
    &["exec"],
    &["policy"],
    &["config"],
    &["store"],
    &["targets"],
    &["limits"],
    &["audit"],
    &["approvals"],
    &["tools"],
    &["call"],
    &["prompts", "resources"],
    &["mcp"],
    &["http"],
];

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::LAYERS;

    /// Every `.rs` file under `dir`, with its module path (`exec/docker/mod.rs` → `exec::docker`).
    fn sources(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, PathBuf)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("src is readable").flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                sources(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut p = prefix.to_vec();
                if !matches!(stem, "mod" | "lib" | "main") {
                    p.push(stem.to_string());
                }
                out.push((p, path));
            }
        }
    }

    /// The code of a file without comments and without its `#[cfg(test)]` module (tests may
    /// reach anywhere).
    fn code(text: &str) -> String {
        let text = match text.find("#[cfg(test)]\nmod ") {
            Some(i) => &text[..i],
            None => text,
        };
        text.lines()
            .map(|l| match l.find("//") {
                // `//` inside a string (a URL) is rare in paths; a line comment is cut.
                Some(i) if !l[..i].contains('"') => &l[..i],
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The module paths `code` (in module `me`) uses: `crate::a::b`, `crate::{a, b::c}` and
    /// `super::x` (resolved against `me`), each as the full path of names.
    fn uses(me: &[String], code: &str) -> Vec<Vec<String>> {
        let path = regex::Regex::new(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)").expect("a regex");
        let ident = regex::Regex::new(r"[A-Za-z_][A-Za-z0-9_]*").expect("a regex");
        let mut found = Vec::new();
        for m in path.captures_iter(code) {
            let base: Vec<String> = match &m[1] {
                "crate" => Vec::new(),
                // `super` of `a::b` is `a`, whether the file is a/b.rs or a/b/mod.rs.
                _ => me[..me.len().saturating_sub(1)].to_vec(),
            };
            let rest = &m[2];
            if rest == "::{" {
                // A group: `crate::{a, b::{c, d}}` — take each item's first name.
                let start = m.get(0).expect("a match").end();
                let mut depth = 1;
                let mut end = start;
                for (i, c) in code[start..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        end = start + i;
                        break;
                    }
                }
                let mut level = 0;
                let mut item = String::new();
                for c in code[start..end].chars().chain(std::iter::once(',')) {
                    match c {
                        '{' => level += 1,
                        '}' => level -= 1,
                        ',' if level == 0 => {
                            let names: Vec<String> =
                                ident.find_iter(&item).map(|n| n.as_str().to_string()).take(2).collect();
                            if !names.is_empty() {
                                let mut p = base.clone();
                                p.extend(names);
                                found.push(p);
                            }
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
            } else {
                let mut p = base;
                p.extend(rest.split("::").filter(|s| !s.is_empty()).map(str::to_string));
                found.push(p);
            }
        }
        found
    }

    fn edges() -> BTreeMap<(String, String), BTreeSet<String>> {
        // (from module path, to module path) → a file that has the edge, per depth.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &[], &mut files);
        let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (me, path) in files {
            if me.is_empty() {
                continue; // lib.rs and main.rs declare modules; main uses the library by name
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            for used in uses(&me, &code(&text)) {
                out.entry((me.join("::"), used.join("::")))
                    .or_default()
                    .insert(path.strip_prefix(&root).unwrap_or(&path).display().to_string());
            }
        }
        out
    }

    fn rank(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    #[test]
    fn every_module_is_in_a_layer() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &[], &mut files);
        let unplaced: BTreeSet<String> = files
            .iter()
            .filter_map(|(m, _)| m.first())
            .filter(|m| *m != "layering" && rank(m).is_none())
            .cloned()
            .collect();
        assert!(unplaced.is_empty(), "modules missing from LAYERS: {unplaced:?}");
    }

    #[test]
    fn no_module_uses_one_in_its_own_layer_or_above() {
        let mut back = Vec::new();
        for ((from, to), files) in edges() {
            let (a, b) = (
                from.split("::").next().unwrap_or(""),
                to.split("::").next().unwrap_or(""),
            );
            if a == b || a == "layering" {
                continue;
            }
            let (Some(ra), Some(rb)) = (rank(a), rank(b)) else {
                continue; // a name that is not a module (a macro, a type at the crate root)
            };
            if rb >= ra {
                back.push(format!(
                    "{a} → {b} (in {})",
                    files.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        assert!(
            back.is_empty(),
            "back edges against the layer order:\n{}",
            back.join("\n")
        );
    }

    #[test]
    fn submodules_use_each_other_without_cycles() {
        // Edges between sibling submodules (`exec::local` → `exec::procfs`), per parent module.
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((from, to), _) in edges() {
            let f: Vec<&str> = from.split("::").collect();
            let t: Vec<&str> = to.split("::").collect();
            if f.len() < 2 || t.len() < 2 || f[0] != t[0] || f[1] == t[1] {
                continue;
            }
            let (a, b) = (format!("{}::{}", f[0], f[1]), format!("{}::{}", t[0], t[1]));
            graph.entry(a).or_default().insert(b);
        }
        // Depth-first search for a cycle.
        fn visit(
            n: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            state: &mut BTreeMap<String, u8>,
            stack: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            match state.get(n) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == n).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(n.to_string());
                    return Some(cycle);
                }
                Some(_) => return None,
                None => {}
            }
            state.insert(n.to_string(), 1);
            stack.push(n.to_string());
            for next in graph.get(n).into_iter().flatten() {
                if let Some(c) = visit(next, graph, state, stack) {
                    return Some(c);
                }
            }
            stack.pop();
            state.insert(n.to_string(), 2);
            None
        }
        let mut state = BTreeMap::new();
        for n in graph.keys() {
            if let Some(cycle) = visit(n, &graph, &mut state, &mut Vec::new()) {
                panic!("submodules in a cycle: {}", cycle.join(" → "));
            }
        }
    }

    #[test]
    fn the_check_sees_a_back_edge() {
        // The parser finds each form of path (so a back edge cannot hide behind a `use` group).
        let me = vec!["policy".to_string()];
        let found = uses(
            &me,
            "use crate::{tools::Risk, config::{A, B}};\nfn f() { crate::http::x(); super::mcp::y() }",
        );
        let firsts: Vec<&str> = found.iter().map(|p| p[0].as_str()).collect();
        assert_eq!(firsts, ["tools", "config", "http", "mcp"]);
    }
}
