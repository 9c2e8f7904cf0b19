//! Reading files inside configured roots without ever leaving them: the path-safety core of the
//! `files` and `logs` toolsets.
//!
//! Every path is resolved by the kernel, relative to a file descriptor opened on its root, with
//! `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: a `..` or a symlink (at any depth,
//! absolute or relative) that would leave the root fails the lookup with `EXDEV`, and `/proc`
//! magic links (`/proc/self/root`, `/proc/PID/fd/N`) are never followed. Resolution and open are
//! one system call, so a symlink swapped in between a check and a use cannot redirect it (no
//! TOCTOU). Relative symlinks that stay inside the root are followed; an absolute symlink is
//! refused even when it points inside (`RESOLVE_BENEATH` does not resolve from `/`). There is
//! no fallback on kernels without `openat2` (Linux < 5.6): the operation is refused.
//!
//! Deny patterns (globs with `*` and `?`, matched case-insensitively against single path
//! components) apply to every component of the path as asked *and* of the path as resolved
//! (read back from the opened descriptor), so a symlink inside the root pointing at `.ssh/`
//! does not get around them. [`DEFAULT_DENY`] is always applied.
//!
//! Files are opened `O_PATH` first and checked before any real open: only regular files are
//! read (a FIFO would block, a device could have side effects on open); the read descriptor is
//! reopened from the `O_PATH` one through `/proc/self/fd`, so it is the same inode. A regular
//! file with more than one hard link is not read (its other name may lie outside every root, and
//! no path check sees it) unless the roots allow it ([`Roots::with_hardlinks`]); the link count
//! is taken with `fstat` on the read descriptor itself, never by name. Metadata (stat, listing,
//! name search) still shows such files, with their link count. Directory walks (search) never
//! follow symlinks. Everything here is blocking: async callers use `spawn_blocking`. Knows
//! nothing about callers or MCP.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;

/// Deny patterns applied whatever the configuration says: secrets a file-reading tool must
/// never return. Matched case-insensitively against every path component.
pub const DEFAULT_DENY: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".password-store",
    ".aws",
    ".kube",
    ".docker",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.key",
    "*_key",
    "*.pem",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    ".env",
    ".env.*",
    "*.env",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    ".htpasswd",
    "credentials",
    "credentials.*",
    "secrets",
    "*-secrets",
    "*.keytab",
    "private_key*",
    "shadow.*",
    "gshadow.*",
    "opasswd",
    "wireguard",
    "wg*.conf",
    "*.ovpn",
    ".my.cnf",
    "debian.cnf",
    ".npmrc",
    ".pypirc",
    "tailscaled.state",
];

/// File systems the file tools never read or list: the kernel's views of processes and
/// devices. A root of `/` would otherwise reach `/proc/self/mem` (this server's own memory, with
/// its keys and tokens), `/proc/*/environ` or `/sys/firmware/efi/efivars`.
const PSEUDO_FILESYSTEMS: &[(u32, &str)] = &[
    (0x0000_9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpffs"),
    (0xde5e_81e4, "efivarfs"),
    (0x6265_6570, "configfs"),
    (0x0027_e0eb, "cgroupfs"),
    (0x6367_7270, "cgroup2fs"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x4341_5d53, "smackfs"),
    (0x6165_676c, "pstore"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6e73_6673, "nsfs"),
];

/// Longest path argument accepted (bytes).
pub const MAX_PATH_BYTES: usize = 4096;
/// Bytes looked at to tell text from binary.
const SNIFF_BYTES: usize = 8192;
/// Longest line returned by tail and search (characters); longer ones are cut with `…`.
pub const MAX_LINE_CHARS: usize = 2000;
/// Most directory entries a search visits.
pub const MAX_SEARCH_ENTRIES: usize = 100_000;

/// Why a path cannot be used. Messages are safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No roots are configured for this toolset.
    #[error("{0}")]
    NoRoots(String),
    /// The path is malformed (empty, NUL byte, too long, relative with several roots).
    #[error("{0}")]
    BadPath(String),
    /// An absolute path under none of the roots.
    #[error("`{path}` is outside the allowed roots ({roots})")]
    OutsideRoots { path: String, roots: String },
    /// Resolution left the root (`..`, a symlink) or crossed a magic link: the kernel refused.
    #[error("`{path}` resolves outside its root `{root}` (through `..` or a symlink); refused")]
    Escape { path: String, root: String },
    /// A `/proc` magic link or a symlink loop.
    #[error("`{path}` crosses a /proc magic link or too many symlinks; refused")]
    Loop { path: String },
    /// On a kernel pseudo file system (see [`PSEUDO_FILESYSTEMS`]).
    #[error("`{path}` is on {fs}, which the file tools never read (process memory and kernel state live there)")]
    PseudoFs { path: String, fs: &'static str },
    /// This server's own configuration, audit database or secrets.
    #[error("`{path}` is this server's own {what}; the file tools never return it")]
    Protected { path: String, what: String },
    /// A configured root whose path goes through a symlink.
    #[error(
        "the configured root `{root}` goes through a symlink{resolved}; configure the path without symlinks (roots are opened without following them, so nobody who can write above a root can swap it for a link)"
    )]
    RootSymlink { root: String, resolved: String },
    /// A component matches a deny pattern.
    #[error("`{path}` is denied: component `{component}` matches deny pattern `{pattern}`")]
    Denied {
        path: String,
        component: String,
        pattern: String,
    },
    #[error("`{0}` does not exist")]
    NotFound(String),
    #[error("`{0}`: permission denied")]
    PermissionDenied(String),
    /// The wrong kind of file (a directory where a file is needed, a FIFO, ...).
    #[error("`{path}` is {what}")]
    WrongKind { path: String, what: String },
    /// A regular file with more than one hard link, where the roots do not allow them.
    #[error(
        "`{path}` is a regular file with {links} hard links: another name, possibly outside every root, reaches the same contents, so it is not read; {hint}"
    )]
    HardLinked {
        path: String,
        links: u64,
        hint: &'static str,
    },
    /// The kernel lacks `openat2`.
    #[error("this kernel has no openat2(2) (Linux 5.6+ is needed); file access is refused rather than done unsafely")]
    Unsupported,
    #[error("`{path}`: {message}")]
    Io { path: String, message: String },
}

/// A set of deny patterns (always including [`DEFAULT_DENY`]).
#[derive(Debug, Clone)]
pub struct Deny {
    patterns: Vec<String>,
}

impl Deny {
    /// The defaults plus `extra` (lowercased; duplicates dropped).
    pub fn new(extra: &[String]) -> Deny {
        let mut patterns: Vec<String> = DEFAULT_DENY.iter().map(|p| p.to_string()).collect();
        for p in extra {
            let p = p.to_lowercase();
            if !patterns.contains(&p) {
                patterns.push(p);
            }
        }
        Deny { patterns }
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The first pattern matching the component `name`.
    pub fn matches(&self, name: &OsStr) -> Option<&str> {
        let name = name.to_string_lossy().to_lowercase();
        self.patterns
            .iter()
            .find(|p| glob_match(p.as_bytes(), name.as_bytes()))
            .map(String::as_str)
    }

    /// The first (component, pattern) of `path` that is denied.
    fn check(&self, path: &Path) -> Option<(String, String)> {
        path.components().find_map(|c| match c {
            Component::Normal(name) => self
                .matches(name)
                .map(|p| (name.to_string_lossy().into_owned(), p.to_string())),
            _ => None,
        })
    }
}

/// Is `pattern` (a glob with `*` = any run of bytes and `?` = one byte) a deny pattern we
/// accept: non-empty, one component (no `/`), no NUL.
pub fn valid_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("a deny pattern may not be empty".into());
    }
    if pattern.contains('/') || pattern.contains('\0') {
        return Err(format!(
            "`{pattern}` is not one path component (patterns match each component; no `/`)"
        ));
    }
    Ok(())
}

/// The crate's one glob (`*`, `?`), under the name the file tools have always used.
pub use crate::text::glob_match;

/// Configured roots and deny patterns of one toolset (`files` or `logs`).
#[derive(Debug, Clone)]
pub struct Roots {
    /// `[files]` or `[logs]`: named in errors.
    section: &'static str,
    roots: Vec<PathBuf>,
    deny: Deny,
    /// This server's own files (config, audit database, secrets), refused wherever they are.
    protected: Vec<Protected>,
    /// Read regular files that have more than one hard link (off unless configured).
    allow_hardlinks: bool,
}

/// A path the file tools refuse whatever the roots say: this server's configuration, audit
/// database and secrets. Matched on the resolved path (a directory and everything under it) and,
/// for files, on device and inode (a hard link or a bind mount reaches the same inode).
#[derive(Debug, Clone)]
pub struct Protected {
    pub path: PathBuf,
    /// What it is, for the error (`configuration file`, `audit database`, `secret`).
    pub what: String,
}

/// One protected path as it resolves now: canonical path, device and inode (files), what.
type ProtectedEntry<'a> = (PathBuf, Option<(u64, u64)>, &'a str);

/// The protected paths as they resolve now.
struct ProtectedNow<'a> {
    entries: Vec<ProtectedEntry<'a>>,
}

impl<'a> ProtectedNow<'a> {
    fn new(list: &'a [Protected]) -> ProtectedNow<'a> {
        let entries = list
            .iter()
            .map(|p| {
                // A protected path that does not exist (yet) protects its spelling.
                let real = std::fs::canonicalize(&p.path).unwrap_or_else(|_| p.path.clone());
                let id = std::fs::metadata(&real).ok().and_then(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.is_file().then(|| (m.dev(), m.ino()))
                });
                (real, id, p.what.as_str())
            })
            .collect();
        ProtectedNow { entries }
    }

    /// What `real` (a resolved absolute path) with `stat` is, when it is protected.
    fn check(&self, real: &Path, stat: Option<&libc::stat>) -> Option<&'a str> {
        self.entries.iter().find_map(|(path, id, what)| {
            let same_inode = match (id, stat) {
                // `st_dev`/`st_ino` are not u64 on every target.
                #[allow(clippy::unnecessary_cast)]
                (Some((dev, ino)), Some(st)) => st.st_dev as u64 == *dev && st.st_ino as u64 == *ino,
                _ => false,
            };
            (same_inode || real.starts_with(path)).then_some(*what)
        })
    }
}

/// A path opened beneath its root (an `O_PATH` descriptor) with what was learned resolving it.
pub struct Opened {
    fd: OwnedFd,
    /// The resolved absolute path (symlinks inside the root followed), spelled with the root
    /// as configured.
    pub path: PathBuf,
    stat: libc::stat,
    /// The resolved absolute path as the kernel spells it.
    real: PathBuf,
}

impl Roots {
    pub fn new(section: &'static str, roots: Vec<PathBuf>, deny: Deny) -> Roots {
        Roots {
            section,
            roots,
            deny,
            protected: Vec::new(),
            allow_hardlinks: false,
        }
    }

    /// Whether regular files with more than one hard link are read (`[files] allow_hardlinks`).
    /// Off by default: a hard link inside a root can give a file from anywhere on the same file
    /// system a name there, and no check on names or resolved paths sees that.
    pub fn with_hardlinks(mut self, allow: bool) -> Roots {
        self.allow_hardlinks = allow;
        self
    }

    /// Refuse `st` (of a regular file about to be read) when it has more than one hard link and
    /// the roots do not allow that.
    fn check_links(&self, shown: &str, st: &libc::stat) -> Result<(), FsError> {
        if self.allow_hardlinks || kind_of(st.st_mode) != FileKind::File || st.st_nlink <= 1 {
            return Ok(());
        }
        Err(FsError::HardLinked {
            path: shown.to_string(),
            // `st_nlink` is not u64 on every target.
            #[allow(clippy::unnecessary_cast)]
            links: st.st_nlink as u64,
            hint: if self.section == "[files]" {
                "if the roots hold hard-linked files on purpose, set `[files] allow_hardlinks = true`"
            } else {
                "give the file a single name (copy it rather than link it)"
            },
        })
    }

    /// A read descriptor on the inode `o` resolved to: a regular file with one link (or any
    /// number, when allowed), checked on the descriptor that is read.
    fn reopen(&self, o: &Opened) -> Result<File, FsError> {
        let file = o.reopen_file()?;
        let shown = o.path.display().to_string();
        let st = fstat(file.as_raw_fd()).map_err(|e| io_error(&shown, e))?;
        self.check_links(&shown, &st)?;
        Ok(file)
    }

    /// Also refuse `protected` (this server's own files), wherever the roots are.
    pub fn with_protected(mut self, protected: Vec<Protected>) -> Roots {
        self.protected = protected;
        self
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn deny(&self) -> &Deny {
        &self.deny
    }

    fn roots_text(&self) -> String {
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Which root `path` is under, and the path relative to it (lexically; `..` is left for the
    /// kernel to refuse).
    fn locate(&self, path: &str) -> Result<(PathBuf, PathBuf), FsError> {
        if self.roots.is_empty() {
            return Err(FsError::NoRoots(format!(
                "no roots are configured for this toolset: set `{} roots = [\"/srv/data\", ...]` (absolute \
                 directories) in the server's config; until then every path is refused",
                self.section
            )));
        }
        if path.is_empty() {
            return Err(FsError::BadPath("`path` may not be empty".into()));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(FsError::BadPath(format!(
                "`path` is longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        if path.contains('\0') {
            return Err(FsError::BadPath("`path` contains a NUL byte".into()));
        }
        let p = Path::new(path);
        if p.is_absolute() {
            let best = self
                .roots
                .iter()
                .filter(|r| p.starts_with(r))
                .max_by_key(|r| r.components().count())
                .ok_or_else(|| FsError::OutsideRoots {
                    path: path.to_string(),
                    roots: self.roots_text(),
                })?;
            let rel = p.strip_prefix(best).unwrap_or(Path::new("")).to_path_buf();
            Ok((best.clone(), rel))
        } else if self.roots.len() == 1 {
            Ok((self.roots[0].clone(), p.to_path_buf()))
        } else {
            Err(FsError::BadPath(format!(
                "`{path}` is relative but there are several roots ({}): give an absolute path",
                self.roots_text()
            )))
        }
    }

    /// Resolve `path` beneath its root and open it `O_PATH` (no read access yet), checking deny
    /// patterns on the asked and the resolved path.
    pub fn open(&self, path: &str) -> Result<Opened, FsError> {
        let (root, rel) = self.locate(path)?;
        let shown = root.join(&rel).display().to_string();
        if let Some((component, pattern)) = self.deny.check(&rel) {
            return Err(FsError::Denied {
                path: shown,
                component,
                pattern,
            });
        }
        let root_fd = open_root(&root)?;
        let rel_c = if rel.as_os_str().is_empty() {
            CString::new(".").expect("no NUL")
        } else {
            CString::new(rel.as_os_str().as_bytes())
                .map_err(|_| FsError::BadPath("`path` contains a NUL byte".into()))?
        };
        let fd = openat2(
            root_fd.as_raw_fd(),
            &rel_c,
            (libc::O_PATH | libc::O_CLOEXEC) as u64,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        )
        .map_err(|e| resolve_error(e, &shown, &root))?;
        let real_root = fd_path(&root_fd).map_err(|e| io_error(&root.display().to_string(), e))?;
        let real = fd_path(&fd).map_err(|e| io_error(&shown, e))?;
        // The kernel guarantees this; checked again so a surprise cannot go unnoticed.
        let Ok(real_rel) = real.strip_prefix(&real_root) else {
            return Err(FsError::Escape {
                path: shown,
                root: root.display().to_string(),
            });
        };
        if let Some((component, pattern)) = self.deny.check(real_rel) {
            return Err(FsError::Denied {
                path: shown,
                component,
                pattern,
            });
        }
        if let Some(fs) = pseudo_fs(fd.as_raw_fd()) {
            return Err(FsError::PseudoFs { path: shown, fs });
        }
        let stat = fstat(fd.as_raw_fd()).map_err(|e| io_error(&shown, e))?;
        if let Some(what) = ProtectedNow::new(&self.protected).check(&real, Some(&stat)) {
            return Err(FsError::Protected {
                path: shown,
                what: what.to_string(),
            });
        }
        let path = if real_rel.as_os_str().is_empty() {
            root.clone()
        } else {
            root.join(real_rel)
        };
        Ok(Opened { fd, path, stat, real })
    }

    /// `files_stat`: facts about one path.
    pub fn stat(&self, path: &str) -> Result<FileInfo, FsError> {
        let o = self.open(path)?;
        Ok(FileInfo::from_stat(&o.path, &o.stat))
    }

    /// `files_list`: the entries of a directory, sorted by name, at most `limit`; denied
    /// entries are left out and counted.
    pub fn list(&self, path: &str, limit: usize) -> Result<Listing, FsError> {
        let o = self.open(path)?;
        let shown = o.path.display().to_string();
        if kind_of(o.stat.st_mode) != FileKind::Directory {
            return Err(FsError::WrongKind {
                path: shown,
                what: format!("a {}, not a directory", kind_of(o.stat.st_mode).as_str()),
            });
        }
        let names = read_dir_names(&o.fd).map_err(|e| io_error(&shown, e))?;
        let protected = ProtectedNow::new(&self.protected);
        let mut entries = Vec::new();
        let mut denied = 0u64;
        let total = names.len();
        for name in names {
            if self.deny.matches(&name).is_some() {
                denied += 1;
                continue;
            }
            let Ok(st) = fstatat_nofollow(o.fd.as_raw_fd(), &name) else {
                continue;
            };
            if protected.check(&o.real.join(&name), Some(&st)).is_some() {
                denied += 1;
                continue;
            }
            let kind = kind_of(st.st_mode);
            let link_target = if kind == FileKind::Symlink {
                readlinkat(o.fd.as_raw_fd(), &name).ok()
            } else {
                None
            };
            entries.push(Entry {
                name: name.to_string_lossy().into_owned(),
                kind,
                size: st.st_size as u64,
                mode: format!("{:04o}", st.st_mode & 0o7777),
                // `st_nlink` is not u64 on every target.
                #[allow(clippy::unnecessary_cast)]
                links: st.st_nlink as u64,
                modified: time_rfc3339(st.st_mtime, st.st_mtime_nsec),
                link_target,
            });
        }
        let listed = entries.len();
        let omitted = listed.saturating_sub(limit) as u64;
        entries.truncate(limit);
        Ok(Listing {
            path: shown,
            total: total as u64,
            denied,
            omitted,
            entries,
        })
    }

    /// `files_read`: up to `length` bytes from `offset` of a regular file.
    pub fn read(&self, path: &str, offset: u64, length: usize) -> Result<Chunk, FsError> {
        let o = self.open(path)?;
        let shown = o.path.display().to_string();
        let file = self.reopen(&o)?;
        let size = o.stat.st_size as u64;
        let mut buf = vec![0u8; length];
        let got = read_full_at(&file, &mut buf, offset).map_err(|e| io_error(&shown, e))?;
        buf.truncate(got);
        Ok(Chunk {
            path: shown,
            size,
            offset,
            bytes: buf,
        })
    }

    /// `files_tail` / `logs_tail`: the last `lines` lines (only those matching `filter`, when
    /// given) within the last `max_bytes` of a regular file.
    pub fn tail(
        &self,
        path: &str,
        lines: usize,
        max_bytes: usize,
        filter: Option<&regex::Regex>,
    ) -> Result<Tail, FsError> {
        let o = self.open(path)?;
        let shown = o.path.display().to_string();
        let file = self.reopen(&o)?;
        let size = o.stat.st_size as u64;
        let start = size.saturating_sub(max_bytes as u64);
        // One positioned read of the window: bounded by `max_bytes`.
        let mut buf = vec![0u8; (size - start) as usize];
        let got = read_full_at(&file, &mut buf, start).map_err(|e| io_error(&shown, e))?;
        buf.truncate(got);
        if buf[..buf.len().min(SNIFF_BYTES)].contains(&0) {
            return Err(FsError::WrongKind {
                path: shown,
                what: "a binary file (NUL bytes); use files_read".into(),
            });
        }
        let text = String::from_utf8_lossy(&buf);
        let mut all: Vec<&str> = text.split('\n').collect();
        if all.last() == Some(&"") {
            all.pop();
        }
        // The first line of a window that does not start the file is probably partial.
        let window_cut = start > 0;
        if window_cut && !all.is_empty() {
            all.remove(0);
        }
        let matching: Vec<&str> = match filter {
            Some(re) => all.into_iter().filter(|l| re.is_match(l)).collect(),
            None => all,
        };
        let available = matching.len();
        let keep = &matching[available.saturating_sub(lines)..];
        Ok(Tail {
            path: shown,
            size,
            bytes_scanned: got as u64,
            window_cut,
            lines_available: available as u64,
            lines: keep
                .iter()
                .map(|l| cut_line(l.strip_suffix('\r').unwrap_or(l)))
                .collect(),
        })
    }

    /// `files_search`: walk the directory `path` (never following symlinks, skipping denied
    /// names) and match `re` against entry names or file contents.
    pub fn search(&self, path: &str, re: &regex::Regex, opts: SearchOptions) -> Result<SearchResult, FsError> {
        let o = self.open(path)?;
        let shown = o.path.display().to_string();
        if kind_of(o.stat.st_mode) != FileKind::Directory {
            return Err(FsError::WrongKind {
                path: shown,
                what: format!("a {}, not a directory", kind_of(o.stat.st_mode).as_str()),
            });
        }
        let mut out = SearchResult {
            path: shown,
            matches: Vec::new(),
            files_scanned: 0,
            bytes_scanned: 0,
            entries_visited: 0,
            denied_skipped: 0,
            binary_skipped: 0,
            hardlinks_skipped: 0,
            stopped: None,
        };
        let protected = ProtectedNow::new(&self.protected);
        // Depth-first, names sorted, so results are stable. Each entry: the directory, its path
        // as shown, its path as the kernel resolved it, its depth.
        let mut stack: Vec<(OwnedFd, PathBuf, PathBuf, usize)> = vec![(o.fd, o.path.clone(), o.real.clone(), 0)];
        'walk: while let Some((dir, dir_path, dir_real, depth)) = stack.pop() {
            let Ok(names) = read_dir_names(&dir) else { continue };
            let mut subdirs = Vec::new();
            for name in names {
                out.entries_visited += 1;
                if out.entries_visited as usize > MAX_SEARCH_ENTRIES {
                    out.stopped = Some(format!("entries visited reached {MAX_SEARCH_ENTRIES}"));
                    break 'walk;
                }
                if self.deny.matches(&name).is_some() {
                    out.denied_skipped += 1;
                    continue;
                }
                let Ok(st) = fstatat_nofollow(dir.as_raw_fd(), &name) else {
                    continue;
                };
                if protected.check(&dir_real.join(&name), Some(&st)).is_some() {
                    out.denied_skipped += 1;
                    continue;
                }
                let kind = kind_of(st.st_mode);
                let full = dir_path.join(&name);
                if opts.contents {
                    if kind == FileKind::File {
                        let budget = opts.max_bytes.saturating_sub(out.bytes_scanned);
                        if budget == 0 {
                            out.stopped = Some(format!("bytes scanned reached {}", opts.max_bytes));
                            break 'walk;
                        }
                        self.grep_file(&dir, &name, &full, re, budget, opts.max_results, &mut out);
                        if out.matches.len() >= opts.max_results {
                            out.stopped = Some(format!("max_results={} reached", opts.max_results));
                            break 'walk;
                        }
                        if out.bytes_scanned >= opts.max_bytes {
                            out.stopped = Some(format!("bytes scanned reached {}", opts.max_bytes));
                            break 'walk;
                        }
                    }
                } else if re.is_match(&name.to_string_lossy()) {
                    out.matches.push(SearchMatch {
                        path: full.display().to_string(),
                        kind,
                        line: None,
                        text: None,
                    });
                    if out.matches.len() >= opts.max_results {
                        out.stopped = Some(format!("max_results={} reached", opts.max_results));
                        break 'walk;
                    }
                }
                if kind == FileKind::Directory && depth < opts.max_depth {
                    subdirs.push(name);
                }
            }
            for name in subdirs.into_iter().rev() {
                let Ok(c) = CString::new(name.as_bytes()) else { continue };
                if let Ok(fd) = openat2(
                    dir.as_raw_fd(),
                    &c,
                    (libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
                    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
                ) {
                    // A mount point of /proc, /sys, ... under the directory: not walked.
                    if pseudo_fs(fd.as_raw_fd()).is_some() {
                        out.denied_skipped += 1;
                        continue;
                    }
                    stack.push((fd, dir_path.join(&name), dir_real.join(&name), depth + 1));
                }
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn grep_file(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        full: &Path,
        re: &regex::Regex,
        budget: u64,
        max_results: usize,
        out: &mut SearchResult,
    ) {
        let Ok(c) = CString::new(name.as_bytes()) else { return };
        let Ok(fd) = openat2(
            dir.as_raw_fd(),
            &c,
            (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        ) else {
            return;
        };
        // Swapped for something else since the lstat: skip it.
        match fstat(fd.as_raw_fd()) {
            Ok(st) if kind_of(st.st_mode) == FileKind::File => {
                if self.check_links(&full.display().to_string(), &st).is_err() {
                    out.hardlinks_skipped += 1;
                    return;
                }
            }
            _ => return,
        }
        let file = File::from(fd);
        // Streamed line by line: memory stays at one line (at most `budget`), not one file.
        let mut reader = io::BufReader::with_capacity(64 * 1024, (&file).take(budget));
        out.files_scanned += 1;
        match reader.fill_buf() {
            Ok(head) if head[..head.len().min(SNIFF_BYTES)].contains(&0) => {
                out.bytes_scanned += head.len() as u64;
                out.binary_skipped += 1;
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(n) => out.bytes_scanned += n as u64,
            }
            number += 1;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if re.is_match(text) {
                out.matches.push(SearchMatch {
                    path: full.display().to_string(),
                    kind: FileKind::File,
                    line: Some(number),
                    text: Some(cut_line(text)),
                });
                if out.matches.len() >= max_results {
                    return;
                }
            }
        }
    }
}

impl Opened {
    /// A read descriptor on the same inode, for regular files only.
    fn reopen_file(&self) -> Result<File, FsError> {
        let shown = self.path.display().to_string();
        let kind = kind_of(self.stat.st_mode);
        if kind != FileKind::File {
            return Err(FsError::WrongKind {
                path: shown,
                what: format!("a {}, not a regular file", kind.as_str()),
            });
        }
        // Reopening the O_PATH descriptor through its /proc/self/fd link opens exactly the inode
        // that was resolved beneath the root; the name is not looked up again.
        let link = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&link)
            .map_err(|e| io_error(&shown, e))
    }
}

/// Options of [`Roots::search`].
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    /// Match file contents (line by line) instead of entry names.
    pub contents: bool,
    pub max_results: usize,
    /// Total bytes of file contents read.
    pub max_bytes: u64,
    /// Directory levels below the start (0 = the directory itself only).
    pub max_depth: usize,
}

/// What kind of file a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
    Unknown,
}

impl FileKind {
    /// The short name used in results (`file`, `directory`, `block_device`, ...).
    pub fn key(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::BlockDevice => "block_device",
            FileKind::CharDevice => "char_device",
            FileKind::Unknown => "unknown",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "regular file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "FIFO",
            FileKind::Socket => "socket",
            FileKind::BlockDevice => "block device",
            FileKind::CharDevice => "character device",
            FileKind::Unknown => "file of unknown type",
        }
    }
}

/// `files_stat`'s facts about a path (symlinks followed within the root).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FileInfo {
    /// The resolved absolute path.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits in octal, e.g. `0644`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub inode: u64,
    pub links: u64,
    /// Last modification, RFC 3339 UTC.
    pub modified: Option<String>,
    /// Last status change, RFC 3339 UTC.
    pub changed: Option<String>,
    /// Last access, RFC 3339 UTC.
    pub accessed: Option<String>,
}

impl FileInfo {
    fn from_stat(path: &Path, st: &libc::stat) -> FileInfo {
        FileInfo {
            path: path.display().to_string(),
            kind: kind_of(st.st_mode),
            size: st.st_size as u64,
            mode: format!("{:04o}", st.st_mode & 0o7777),
            uid: st.st_uid,
            gid: st.st_gid,
            inode: st.st_ino,
            #[allow(clippy::unnecessary_cast)]
            links: st.st_nlink as u64,
            modified: time_rfc3339(st.st_mtime, st.st_mtime_nsec),
            changed: time_rfc3339(st.st_ctime, st.st_ctime_nsec),
            accessed: time_rfc3339(st.st_atime, st.st_atime_nsec),
        }
    }
}

/// One directory entry (not followed when it is a symlink).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Entry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits in octal.
    pub mode: String,
    /// Hard links to the entry; a regular file with more than one is not read unless
    /// `[files] allow_hardlinks`.
    pub links: u64,
    pub modified: Option<String>,
    /// For a symlink: what it points to, as written (it may point outside the root; reading
    /// through it is then refused).
    pub link_target: Option<String>,
}

/// A directory's entries.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Listing {
    /// The resolved absolute path of the directory.
    pub path: String,
    /// Entries in the directory.
    pub total: u64,
    /// Entries left out because their names match a deny pattern.
    pub denied: u64,
    /// Entries left out by `limit`.
    pub omitted: u64,
    pub entries: Vec<Entry>,
}

/// Bytes read from a file.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub path: String,
    pub size: u64,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// The end of a file.
#[derive(Debug, Clone)]
pub struct Tail {
    pub path: String,
    pub size: u64,
    pub bytes_scanned: u64,
    /// Whether the scanned window started after the beginning of the file.
    pub window_cut: bool,
    /// Lines (matching, when filtered) in the window.
    pub lines_available: u64,
    pub lines: Vec<String>,
}

/// One search hit.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SearchMatch {
    /// Absolute path of the entry.
    pub path: String,
    pub kind: FileKind,
    /// Line number (contents mode), from 1.
    pub line: Option<u64>,
    /// The matching line (contents mode), at most 2000 characters.
    pub text: Option<String>,
}

/// What a search found and how much it looked at.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SearchResult {
    /// The resolved directory searched.
    pub path: String,
    pub matches: Vec<SearchMatch>,
    pub files_scanned: u64,
    pub bytes_scanned: u64,
    pub entries_visited: u64,
    /// Entries skipped (not entered, not matched) because a deny pattern matches their name.
    pub denied_skipped: u64,
    /// Files skipped in contents mode because they look binary.
    pub binary_skipped: u64,
    /// Files skipped in contents mode because they have more than one hard link (not read unless
    /// `[files] allow_hardlinks`).
    pub hardlinks_skipped: u64,
    /// Why the search stopped early (a cap was reached), if it did.
    pub stopped: Option<String>,
}

/// Text or binary: text is valid UTF-8 without NUL bytes (an incomplete character cut by the
/// end of the range does not count against it). Returns the text and how many trailing bytes
/// were left off to end on a whole character.
pub fn as_text(bytes: &[u8]) -> Option<(&str, usize)> {
    if bytes[..bytes.len().min(SNIFF_BYTES)].contains(&0) || bytes.contains(&0) {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Some((s, 0)),
        Err(e) if e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4 => {
            let valid = e.valid_up_to();
            std::str::from_utf8(&bytes[..valid])
                .ok()
                .map(|s| (s, bytes.len() - valid))
        }
        Err(_) => None,
    }
}

fn cut_line(line: &str) -> String {
    if line.chars().count() <= MAX_LINE_CHARS {
        line.to_string()
    } else {
        let mut s: String = line.chars().take(MAX_LINE_CHARS - 1).collect();
        s.push('…');
        s
    }
}

// ---------------------------------------------------------------------------------------------
// System calls.

/// `struct open_how` of `linux/openat2.h`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)`. `EAGAIN` (a concurrent rename made the kernel unsure) and `EINTR` are retried.
fn openat2(dirfd: RawFd, path: &CString, flags: u64, resolve: u64) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags,
        mode: 0,
        resolve,
    };
    let mut tries = 0;
    loop {
        // SAFETY: `path` is a valid NUL-terminated string and `how` a valid `open_how` of the
        // size passed; the kernel reads both and returns a new descriptor or -1.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) if tries < 16 => tries += 1,
            _ => return Err(e),
        }
    }
}

fn open_root(root: &Path) -> Result<OwnedFd, FsError> {
    let shown = root.display().to_string();
    let c = CString::new(root.as_os_str().as_bytes()).map_err(|_| FsError::BadPath("root contains NUL".into()))?;
    // No symlink is followed anywhere in the root's own path: someone who can write to a
    // directory above a root could otherwise swap the root for a link to `/`.
    let opened = openat2(
        libc::AT_FDCWD,
        &c,
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    );
    opened.map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => FsError::RootSymlink {
            resolved: std::fs::canonicalize(root)
                .map(|r| format!(" (it resolves to `{}`)", r.display()))
                .unwrap_or_default(),
            root: shown,
        },
        Some(libc::ENOSYS) => FsError::Unsupported,
        Some(libc::ENOENT) => FsError::Io {
            path: shown,
            message: "the configured root does not exist".into(),
        },
        Some(libc::ENOTDIR) => FsError::Io {
            path: shown,
            message: "the configured root is not a directory".into(),
        },
        _ => io_error(&shown, e),
    })
}

/// The name of the pseudo file system `fd` is on, if it is one of [`PSEUDO_FILESYSTEMS`].
fn pseudo_fs(fd: RawFd) -> Option<&'static str> {
    // SAFETY: `st` is written by fstatfs before it is read; zeroed is a valid bit pattern.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd, &mut st) } < 0 {
        // Fail closed: what cannot be identified is not read.
        return Some("a file system that could not be identified");
    }
    // `f_type`'s width differs between architectures; the magic numbers are 32 bits.
    let magic = st.f_type as u64 as u32;
    PSEUDO_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: `st` is written by fstat before it is read; zeroed is a valid bit pattern.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstatat_nofollow(dirfd: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let c = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: as in `fstat`; `c` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatat(dirfd, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn readlinkat(dirfd: RawFd, name: &OsStr) -> io::Result<String> {
    let c = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` has the length passed; readlinkat writes at most that many bytes.
    let n = unsafe { libc::readlinkat(dirfd, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Fill `buf` from `offset` (fewer bytes at the end of the file); returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The path the kernel has for an open descriptor.
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Names in a directory (without `.` and `..`), sorted.
fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<std::ffi::OsString>> {
    // Opening the /proc/self/fd link of the O_PATH descriptor opens that same directory.
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    Ok(names)
}

fn kind_of(mode: libc::mode_t) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFBLK => FileKind::BlockDevice,
        libc::S_IFCHR => FileKind::CharDevice,
        _ => FileKind::Unknown,
    }
}

fn time_rfc3339(secs: i64, nsec: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(secs, nsec as u32).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn resolve_error(e: io::Error, path: &str, root: &Path) -> FsError {
    match e.raw_os_error() {
        Some(libc::EXDEV) => FsError::Escape {
            path: path.to_string(),
            root: root.display().to_string(),
        },
        Some(libc::ELOOP) => FsError::Loop { path: path.to_string() },
        Some(libc::ENOENT) => FsError::NotFound(path.to_string()),
        Some(libc::ENOTDIR) => FsError::WrongKind {
            path: path.to_string(),
            what: "not reachable: a component is not a directory".into(),
        },
        Some(libc::ENOSYS) => FsError::Unsupported,
        _ => io_error(path, e),
    }
}

fn io_error(path: &str, e: io::Error) -> FsError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => FsError::PermissionDenied(path.to_string()),
        io::ErrorKind::NotFound => FsError::NotFound(path.to_string()),
        _ => FsError::Io {
            path: path.to_string(),
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_glob(pattern: &str, name: &str, expected: bool) {
        assert_eq!(
            glob_match(pattern.as_bytes(), name.as_bytes()),
            expected,
            "{pattern} vs {name}"
        );
    }

    #[test]
    fn globs() {
        check_glob("*.key", "server.key", true);
        check_glob("*.key", "server.key.bak", false);
        check_glob("id_rsa*", "id_rsa.pub", true);
        check_glob(".ssh", ".ssh", true);
        check_glob(".ssh", "x.ssh", false);
        check_glob("a?c", "abc", true);
        check_glob("a?c", "ac", false);
        check_glob("*", "", true);
        check_glob("*a*b*", "xxaxxbxx", true);
        check_glob("*a*b", "xxaxxbxxc", false);
        check_glob("", "", true);
    }

    #[test]
    fn deny_is_case_insensitive_and_keeps_defaults() {
        let d = Deny::new(&["*.Secret".into()]);
        assert_eq!(d.matches(OsStr::new("SERVER.KEY")), Some("*.key"));
        assert_eq!(d.matches(OsStr::new("a.secret")), Some("*.secret"));
        assert_eq!(d.matches(OsStr::new("shadow")), Some("shadow"));
        assert_eq!(d.matches(OsStr::new("id_ed25519")), Some("id_ed25519*"));
        assert_eq!(d.matches(OsStr::new("ssh_host_ed25519_key")), Some("*_key"));
        assert_eq!(d.matches(OsStr::new("notes.txt")), None);
        // Secrets found under names the first list missed.
        for (name, pattern) in [
            ("chap-secrets", "*-secrets"),
            ("krb5.keytab", "*.keytab"),
            ("private_key.json", "private_key*"),
            ("shadow.bak", "shadow.*"),
            ("opasswd", "opasswd"),
            ("wireguard", "wireguard"),
            ("wg0.conf", "wg*.conf"),
            ("client.ovpn", "*.ovpn"),
            (".my.cnf", ".my.cnf"),
            ("debian.cnf", "debian.cnf"),
            (".npmrc", ".npmrc"),
            (".pypirc", ".pypirc"),
        ] {
            assert_eq!(d.matches(OsStr::new(name)), Some(pattern), "{name}");
        }
        assert_eq!(d.matches(OsStr::new("openssl.cnf")), None);
        // config.example.toml lists the built-in patterns for operators: it must list them all.
        let example = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"));
        let listed: Vec<&str> = example
            .lines()
            .skip_while(|l| !l.starts_with("[files]"))
            .take_while(|l| !l.starts_with("deny"))
            .flat_map(|l| l.trim_start_matches('#').split_whitespace())
            .collect();
        for pattern in DEFAULT_DENY {
            assert!(
                listed.contains(pattern),
                "config.example.toml does not list `{pattern}`"
            );
        }
        assert!(valid_pattern("a/b").is_err());
        assert!(valid_pattern("").is_err());
        assert!(valid_pattern("*.bak").is_ok());
    }

    fn check_locate(roots: &[&str], path: &str, expected: Result<(&str, &str), &str>) {
        let r = Roots::new("[files]", roots.iter().map(PathBuf::from).collect(), Deny::new(&[]));
        match (r.locate(path), expected) {
            (Ok((root, rel)), Ok((want_root, want_rel))) => {
                assert_eq!(
                    (root.to_str().unwrap(), rel.to_str().unwrap()),
                    (want_root, want_rel),
                    "{path}"
                )
            }
            (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{path}: `{e}` lacks `{needle}`"),
            (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn paths_are_placed_under_the_longest_matching_root() {
        let two = ["/srv", "/srv/media"];
        check_locate(&two, "/srv/media/a.mkv", Ok(("/srv/media", "a.mkv")));
        check_locate(&two, "/srv/app/x", Ok(("/srv", "app/x")));
        check_locate(&two, "/srv", Ok(("/srv", "")));
        // `..` is left for the kernel to refuse beneath the root.
        check_locate(&two, "/srv/../etc/passwd", Ok(("/srv", "../etc/passwd")));
        check_locate(&two, "/srvx/a", Err("outside the allowed roots (/srv, /srv/media)"));
        check_locate(&two, "a.txt", Err("relative but there are several roots"));
        check_locate(&["/srv"], "a/b", Ok(("/srv", "a/b")));
        check_locate(&["/srv"], "", Err("may not be empty"));
        check_locate(&["/srv"], "a\0b", Err("NUL"));
        check_locate(&["/srv"], &"a".repeat(5000), Err("longer than 4096"));
        check_locate(
            &[],
            "/srv",
            Err("no roots are configured for this toolset: set `[files] roots"),
        );
    }

    #[test]
    fn text_detection() {
        assert_eq!(as_text(b"hello\n"), Some(("hello\n", 0)));
        assert_eq!(as_text(b"a\0b"), None);
        assert_eq!(as_text(&[0xff, 0xfe, 0x41]), None);
        // "é" cut in half at the end of the range is still text.
        assert_eq!(as_text(&[b'a', 0xc3]), Some(("a", 1)));
    }
}
