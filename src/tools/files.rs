//! The `files` toolset: list, stat, read, tail and search files beneath the roots configured in
//! `[files]`, on the server's own host (`local` targets) only.
//!
//! Path safety lives in `exec::fs` (kernel-enforced `openat2` resolution beneath a root, deny
//! patterns on every component); tools here parse and bound arguments, pick the roots from the
//! configuration and render results. They never open a path themselves, never check scopes and
//! never write audit rows. With no roots configured every call is refused with a message that
//! says how to configure them.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, Tool, ToolContext, ToolError, Truncated, blocking,
    bounded, tool,
};
use crate::exec::fs::{self, Deny, FileInfo, Listing, Roots, SearchOptions, SearchResult};
use crate::policy::{Area, Level, Scope};

/// `files_list.limit`.
pub const LIST_LIMIT: (i64, i64, i64) = (200, 1, 1000);
/// `files_tail.lines` and `logs_tail.lines`.
pub const TAIL_LINES: (i64, i64, i64) = (100, 1, 2000);
/// `files_search.max_results`.
pub const SEARCH_RESULTS: (i64, i64, i64) = (100, 1, 1000);
/// `files_search.max_bytes`: contents read in all.
pub const SEARCH_BYTES: (i64, i64, i64) = (16 << 20, 1, 64 << 20);
/// `files_search.max_depth`.
pub const SEARCH_DEPTH: (i64, i64, i64) = (16, 0, 64);
/// Default `files_read.length` (capped by `[files] max_read_bytes`).
pub const READ_DEFAULT: usize = 64 * 1024;
/// Longest regular expression accepted.
pub const MAX_PATTERN_CHARS: usize = 1024;

/// Appended to every description of this toolset.
macro_rules! safety {
    () => {
        "Local target only. Paths: absolute under a configured `[files] roots` directory, or \
        relative to the only root. Resolution is done by the kernel beneath the root (openat2 RESOLVE_BENEATH): \
        `..` or a symlink leading out of the root is refused, symlinks staying inside are followed. Names matching \
        a deny pattern (secrets such as `.ssh`, `*.key`, `*.pem`, `shadow`, `.env`, plus `[files] deny`) are \
        refused on every path component. A regular file with more than one hard link (another name, possibly \
        outside the roots, reaches it) is not read unless `[files] allow_hardlinks = true`; stat and list show \
        its link count."
    };
}

/// The server's own file system: `local` targets only.
const KINDS: &[Kind] = &[Kind::Local];
const FILES_READ: Requirement = Requirement::Scope(Scope::new(Area::Files, Level::Read));

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "files_list",
                title: "List a directory",
                description: concat!(
                    "Entries of a directory sorted by name, at most `limit` (1-1000, default 200): name, kind \
                     (file, directory, symlink, fifo, socket, block_device, char_device), size, mode (octal), \
                     hard link count, modified (RFC 3339 UTC) and, for symlinks, the link target as written (symlinks are not \
                     followed here). Entries matching a deny pattern are left out and counted in `denied`. ",
                    safety!()
                ),
                requires: FILES_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            list,
        ),
        tool(
            Declaration {
                name: "files_stat",
                title: "File facts",
                description: concat!(
                    "Facts about one file or directory (a final symlink is followed within the root): resolved \
                 absolute path, kind, size, mode (octal), uid, gid, inode, link count, and modified / changed / \
                 accessed times (RFC 3339 UTC).",
                    " ",
                    safety!()
                ),
                requires: FILES_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            stat,
        ),
        tool(
            Declaration {
                name: "files_read",
                title: "Read a file",
                description: concat!(
                    "Read `length` bytes (default 65536; at most `[files] max_read_bytes`, default 262144: a larger \
                 length is an error naming the cap) of a regular file from `offset` (default 0). Text (UTF-8 \
                 without NUL bytes) comes back as `encoding: text`, ending on a whole character; anything else \
                 as `encoding: base64`. `eof` and `next_offset` say whether and where to continue. FIFOs, \
                 sockets and devices are refused.",
                    " ",
                    safety!()
                ),
                requires: FILES_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            read,
        ),
        tool(
            Declaration {
                name: "files_tail",
                title: "Tail a file",
                description: concat!(
                    "The last `lines` lines (1-2000, default 100) of a regular text file, read from the last \
                 `[files] max_read_bytes` of it (a window that starts mid-file drops its first, partial line). \
                 Lines longer than 2000 characters are cut with `…`. Binary files are refused (use files_read).",
                    " ",
                    safety!()
                ),
                requires: FILES_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            tail,
        ),
        tool(
            Declaration {
                name: "files_search",
                title: "Search files",
                description: concat!(
                    "Search the directory `path` for a regular expression (`pattern`, Rust regex syntax) in entry \
                 names (`in: names`, default) or in the lines of regular text files (`in: contents`; binary \
                 files, and files with more than one hard link unless allowed, are skipped and counted). Walks each directory's entries in name order, then its subdirectories, at most `max_depth` levels \
                 (0-64, default 16), never following symlinks, skipping denied names (counted). Stops at \
                 `max_results` matches (1-1000, default 100), `max_bytes` of contents read (default 16 MiB, at most 64 MiB) or \
                 100000 entries, and says which in `stopped`.",
                    " ",
                    safety!()
                ),
                requires: FILES_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            search,
        ),
    ]
}

/// Arguments of `files_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Directory to list.
    pub path: String,
    /// Most entries returned, 1 to 1000 (default 200).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

/// Arguments of `files_stat`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatArgs {
    /// File or directory.
    pub path: String,
}

/// Arguments of `files_read`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// Regular file to read.
    pub path: String,
    /// Byte offset to start at (default 0).
    #[serde(default)]
    pub offset: u64,
    /// Bytes to read: 1 to `[files] max_read_bytes` (default 65536 or that cap, whichever is smaller).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub length: Option<i64>,
}

/// Arguments of `files_tail`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TailArgs {
    /// Regular text file.
    pub path: String,
    /// Lines from the end, 1 to 2000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 2000))]
    pub lines: Option<i64>,
}

/// What `files_search` matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchIn {
    /// Entry names (files, directories, symlinks).
    #[default]
    Names,
    /// Lines of regular text files.
    Contents,
}

/// Arguments of `files_search`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// Directory to search under.
    pub path: String,
    /// Regular expression (Rust `regex` syntax, at most 1024 characters).
    pub pattern: String,
    /// `names` (default) or `contents`.
    #[serde(default, rename = "in")]
    pub search_in: SearchIn,
    /// Most matches returned, 1 to 1000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub max_results: Option<i64>,
    /// Most bytes of file contents read in all (contents mode), 1 to 67108864 (default 16 MiB).
    #[serde(default)]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_bytes: Option<i64>,
    /// Directory levels below `path` to descend, 0 to 64 (default 16).
    #[serde(default)]
    #[schemars(range(min = 0, max = 64))]
    pub max_depth: Option<i64>,
}

/// `structuredContent` of `files_list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    #[serde(flatten)]
    pub listing: Listing,
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `files_stat`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatOutput {
    #[serde(flatten)]
    pub info: FileInfo,
}

/// How `files_read` returns content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `content` is the text (valid UTF-8, no NUL bytes).
    Text,
    /// The bytes are binary; `content` is their standard base64.
    Base64,
}

/// `structuredContent` of `files_read`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadOutput {
    /// Resolved absolute path.
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    pub offset: u64,
    /// Bytes returned (a text read may end up to 3 bytes early, on a whole character).
    pub length: u64,
    pub encoding: Encoding,
    pub content: String,
    /// Whether the read reached the end of the file.
    pub eof: bool,
    /// Where to continue, when not at the end.
    pub next_offset: Option<u64>,
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `files_tail` and `logs_tail`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TailOutput {
    /// Resolved absolute path.
    pub path: String,
    pub size: u64,
    /// Bytes read from the end of the file.
    pub bytes_scanned: u64,
    /// Lines in the scanned window (matching `grep`, when given).
    pub lines_available: u64,
    pub lines: Vec<String>,
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `files_search`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchOutput {
    pub pattern: String,
    #[serde(rename = "in")]
    pub search_in: SearchIn,
    #[serde(flatten)]
    pub result: SearchResult,
    pub truncated: Option<Truncated>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn list(ctx: ToolContext, args: ListArgs) -> Result<Output<ListOutput>, ToolError> {
    let limit = bounded("limit", args.limit, LIST_LIMIT.0, LIST_LIMIT.1, LIST_LIMIT.2)?;
    let roots = files_roots(&ctx);
    let listing = blocking(move || roots.list(&args.path, limit))
        .await?
        .map_err(fs_failed)?;
    let truncated = (listing.omitted > 0).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some(listing.omitted),
    });
    let out = ListOutput { listing, truncated };
    let text = render_listing(&out);
    Ok(Output::new(out, text))
}

async fn stat(ctx: ToolContext, args: StatArgs) -> Result<Output<StatOutput>, ToolError> {
    let roots = files_roots(&ctx);
    let info = blocking(move || roots.stat(&args.path)).await?.map_err(fs_failed)?;
    let text = format!(
        "{}: {} {} bytes, mode {}, uid {} gid {}, modified {}",
        info.path,
        info.kind.as_str(),
        info.size,
        info.mode,
        info.uid,
        info.gid,
        info.modified.as_deref().unwrap_or("?")
    );
    Ok(Output::new(StatOutput { info }, text))
}

async fn read(ctx: ToolContext, args: ReadArgs) -> Result<Output<ReadOutput>, ToolError> {
    let cap = ctx.config.files.max_read_bytes;
    let length = bounded("length", args.length, READ_DEFAULT.min(cap) as i64, 1, cap as i64)?;
    let roots = files_roots(&ctx);
    let offset = args.offset;
    let chunk = blocking(move || roots.read(&args.path, offset, length))
        .await?
        .map_err(fs_failed)?;
    let (encoding, content, returned) = match fs::as_text(&chunk.bytes) {
        Some((text, left)) => (Encoding::Text, text.to_string(), (chunk.bytes.len() - left) as u64),
        None => (
            Encoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(&chunk.bytes),
            chunk.bytes.len() as u64,
        ),
    };
    let end = chunk.offset + returned;
    let eof = end >= chunk.size;
    let out = ReadOutput {
        path: chunk.path,
        size: chunk.size,
        offset: chunk.offset,
        length: returned,
        encoding,
        content,
        eof,
        next_offset: (!eof).then_some(end),
        truncated: (!eof).then(|| Truncated {
            cap: format!("length={length}"),
            omitted: Some(chunk.size - end),
        }),
    };
    let mut text = format!(
        "{}: bytes {}..{} of {} ({})",
        out.path,
        out.offset,
        end,
        out.size,
        match encoding {
            Encoding::Text => "text",
            Encoding::Base64 => "binary, base64",
        }
    );
    if let Some(next) = out.next_offset {
        let _ = write!(text, "; more from offset {next}");
    }
    let _ = write!(text, "\n{}", out.content);
    Ok(Output::new(out, text))
}

async fn tail(ctx: ToolContext, args: TailArgs) -> Result<Output<TailOutput>, ToolError> {
    let lines = bounded("lines", args.lines, TAIL_LINES.0, TAIL_LINES.1, TAIL_LINES.2)?;
    let roots = files_roots(&ctx);
    let window = ctx.config.files.max_read_bytes;
    let tail = blocking(move || roots.tail(&args.path, lines, window, None))
        .await?
        .map_err(fs_failed)?;
    let out = tail_output(tail, lines, window);
    let text = render_tail(&out);
    Ok(Output::new(out, text))
}

async fn search(ctx: ToolContext, args: SearchArgs) -> Result<Output<SearchOutput>, ToolError> {
    let max_results = bounded(
        "max_results",
        args.max_results,
        SEARCH_RESULTS.0,
        SEARCH_RESULTS.1,
        SEARCH_RESULTS.2,
    )?;
    let max_bytes = bounded(
        "max_bytes",
        args.max_bytes,
        SEARCH_BYTES.0,
        SEARCH_BYTES.1,
        SEARCH_BYTES.2,
    )?;
    let max_depth = bounded(
        "max_depth",
        args.max_depth,
        SEARCH_DEPTH.0,
        SEARCH_DEPTH.1,
        SEARCH_DEPTH.2,
    )?;
    let re = compile_regex("pattern", &args.pattern)?;
    let roots = files_roots(&ctx);
    let opts = SearchOptions {
        contents: args.search_in == SearchIn::Contents,
        max_results,
        max_bytes: max_bytes as u64,
        max_depth,
    };
    let path = args.path.clone();
    let result = blocking(move || roots.search(&path, &re, opts))
        .await?
        .map_err(fs_failed)?;
    let truncated = result.stopped.as_ref().map(|why| Truncated {
        cap: why.clone(),
        omitted: None,
    });
    let out = SearchOutput {
        pattern: args.pattern,
        search_in: args.search_in,
        result,
        truncated,
    };
    let text = render_search(&out);
    Ok(Output::new(out, text))
}

// ---------------------------------------------------------------------------------------------
// Shared with the `logs` toolset.

/// The `[files]` roots and deny patterns.
pub(crate) fn files_roots(ctx: &ToolContext) -> Roots {
    let c = &ctx.config.files;
    Roots::new("[files]", c.roots.clone(), Deny::new(&c.deny))
        .with_protected(protected(&ctx.config))
        .with_hardlinks(c.allow_hardlinks)
}

/// This server's own files, which the `files` and `logs` tools refuse under any root: its
/// configuration file, its audit database (reading it would get around `audit:read`), systemd's
/// credentials directory, and every secret file a target names (`key_file`, `token_file`,
/// `tls_key`; relative ones live in the credentials directory).
pub(crate) fn protected(config: &crate::config::Config) -> Vec<crate::exec::fs::Protected> {
    use crate::exec::fs::Protected;
    let mut out = Vec::new();
    let mut add = |path: std::path::PathBuf, what: &str| {
        out.push(Protected {
            path,
            what: what.to_string(),
        })
    };
    if let Some(source) = &config.source {
        add(absolute(source), "configuration file");
    }
    let db = absolute(&config.database);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        add(name.into(), "audit database");
    }
    add(db, "audit database");
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY");
    if let Some(dir) = &credentials {
        add(dir.into(), "credentials directory");
    }
    for target in &config.targets {
        let Some(settings) = &target.settings else { continue };
        for key in SECRET_FILE_KEYS {
            if let Some(toml::Value::String(p)) = settings.get(*key) {
                // A relative one is in the credentials directory (protected above) or, with none,
                // in the working directory (how `Secret::read` finds it).
                let p = std::path::Path::new(p);
                if p.is_absolute() || credentials.is_none() {
                    add(absolute(p), "secret");
                }
            }
        }
    }
    out
}

/// Target settings that name secret files.
const SECRET_FILE_KEYS: &[&str] = &["key_file", "token_file", "tls_key"];

/// `path`, made absolute against the working directory (the server resolves it the same way).
fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

pub(crate) fn fs_failed(e: fs::FsError) -> ToolError {
    match e {
        fs::FsError::BadPath(m) => ToolError::InvalidArgs(m),
        other => ToolError::Failed(other.to_string()),
    }
}

/// A regular expression from an argument, with a size limit so a pattern cannot exhaust memory.
pub(crate) fn compile_regex(name: &str, pattern: &str) -> Result<regex::Regex, ToolError> {
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(ToolError::InvalidArgs(format!(
            "`{name}` is longer than {MAX_PATTERN_CHARS} characters"
        )));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(4 << 20)
        .build()
        .map_err(|e| ToolError::InvalidArgs(format!("`{name}` is not a valid regular expression: {e}")))
}

pub(crate) fn tail_output(tail: fs::Tail, lines: usize, window: usize) -> TailOutput {
    // Lines were asked for that the window could not hold (it started mid-file).
    let truncated = (tail.window_cut && (tail.lines.len() < lines)).then(|| Truncated {
        cap: format!("{window} bytes scanned from the end"),
        omitted: None,
    });
    TailOutput {
        path: tail.path,
        size: tail.size,
        bytes_scanned: tail.bytes_scanned,
        lines_available: tail.lines_available,
        lines: tail.lines,
        truncated,
    }
}

pub(crate) fn render_tail(out: &TailOutput) -> String {
    let mut t = format!(
        "{}: last {} of {} lines in the last {} bytes\n",
        out.path,
        out.lines.len(),
        out.lines_available,
        out.bytes_scanned
    );
    t.push_str(&out.lines.join("\n"));
    t
}

fn render_listing(out: &ListOutput) -> String {
    let l = &out.listing;
    let mut t = format!("{}: {} entries", l.path, l.total);
    if l.denied > 0 {
        let _ = write!(t, " ({} hidden by deny patterns)", l.denied);
    }
    if l.omitted > 0 {
        let _ = write!(t, " ({} more not shown)", l.omitted);
    }
    for e in &l.entries {
        let _ = write!(t, "\n{:>12} {} {:10} {}", e.size, e.mode, e.kind.key(), e.name);
        if let Some(target) = &e.link_target {
            let _ = write!(t, " -> {target}");
        }
        if e.kind == fs::FileKind::File && e.links > 1 {
            let _ = write!(t, " ({} hard links)", e.links);
        }
    }
    t
}

fn render_search(out: &SearchOutput) -> String {
    let r = &out.result;
    let mut t = format!(
        "{} matches for /{}/ under {} ({} entries, {} files, {} bytes scanned)",
        r.matches.len(),
        out.pattern,
        r.path,
        r.entries_visited,
        r.files_scanned,
        r.bytes_scanned
    );
    if r.hardlinks_skipped > 0 {
        let _ = write!(
            t,
            "; {} files with several hard links not read ([files] allow_hardlinks)",
            r.hardlinks_skipped
        );
    }
    if let Some(why) = &r.stopped {
        let _ = write!(t, "; stopped: {why}");
    }
    for m in &r.matches {
        match (&m.line, &m.text) {
            (Some(n), Some(line)) => {
                let _ = write!(t, "\n{}:{n}: {line}", m.path);
            }
            _ => {
                let _ = write!(t, "\n{}", m.path);
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_read_only_files_scopes() {
        let names: Vec<&str> = tools().iter().map(|t| t.spec().name).collect();
        assert_eq!(
            names,
            vec!["files_list", "files_stat", "files_read", "files_tail", "files_search"]
        );
        for t in tools() {
            let s = t.spec();
            assert_eq!(s.annotations, Annotations::READ_ONLY, "{}", s.name);
            assert_eq!(s.risk, Risk::Low);
            assert_eq!(s.requires, Requirement::Scope(Scope::new(Area::Files, Level::Read)));
            assert!(s.description.contains("Local target only"), "{}", s.name);
        }
    }

    #[test]
    fn regexes_are_bounded() {
        assert!(compile_regex("pattern", "a+b").is_ok());
        assert!(
            matches!(compile_regex("pattern", "("), Err(ToolError::InvalidArgs(m)) if m.contains("not a valid regular expression"))
        );
        assert!(
            matches!(compile_regex("pattern", &"a".repeat(1025)), Err(ToolError::InvalidArgs(m)) if m.contains("longer than 1024"))
        );
        assert!(compile_regex("pattern", "(a{1000}){1000}").is_err());
    }
}
