//! One command on an SSH channel: on a channel of its own (`echo MARKER$$ >&2; COMMAND`, the
//! marker taken out of stderr) or in a persistent shell (end lines with a per-command nonce),
//! each stream capped like the local process executor's.

use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::{ChannelMsg, Sig};
use tokio::time::timeout_at;

use super::known_hosts::Client;
use crate::exec::ExecError;
use crate::exec::process::cut_marker;

pub(super) struct Connection {
    pub(super) handle: client::Handle<Client>,
    pub(super) host_key_fingerprint: String,
    pub(super) server_version: String,
    /// A duplicate of the TCP socket russh owns, only ever polled: it tells at once that the
    /// server closed or reset the connection, even before russh's task has read that.
    pub(super) socket: std::os::fd::OwnedFd,
}

impl Connection {
    /// False once the connection is known to be gone: russh ended it, or the peer's FIN or RST
    /// already arrived. (A connection whose peer vanished without either looks alive.)
    pub(super) fn alive(&self) -> bool {
        use std::os::fd::AsRawFd;
        if self.handle.is_closed() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for an fd we own; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        ready == 0 || pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) == 0
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // The duplicate keeps the socket open after russh dropped its end: close it for real.
        // SAFETY: shutdown(2) on an fd we own.
        unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Open a session channel on `conn`, telling a dropped connection apart from a final error.
pub(super) async fn open_on(
    conn: &Connection,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<russh::Channel<client::Msg>, OpenError> {
    match timeout_at(deadline, conn.handle.channel_open_session()).await {
        Err(_) => Err(OpenError::Final(ExecError::Timeout(timeout))),
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(russh::Error::ChannelOpenFailure(reason))) => Err(OpenError::Final(ExecError::Refused(format!(
            "the server refused a session channel ({reason:?}); is max_concurrent above sshd's MaxSessions (default 10)?"
        )))),
        Ok(Err(e)) => Err(OpenError::Dropped(e.to_string())),
    }
}

pub(super) enum OpenError {
    /// The connection is gone; a new one may be tried.
    Dropped(String),
    Final(ExecError),
}

impl OpenError {
    /// The error to report when no other connection is tried.
    pub(super) fn into_error(self, dest: &str) -> ExecError {
        match self {
            OpenError::Final(e) => e,
            OpenError::Dropped(why) => ExecError::Unreachable(format!("{dest}: connection dropped: {why}")),
        }
    }
}

/// Send `command`, close stdin, and collect output until the channel closes or the deadline.
pub(super) async fn collect(
    mut channel: russh::Channel<client::Msg>,
    command: Vec<u8>,
    cap: usize,
    deadline: tokio::time::Instant,
) -> Result<Raw, ExecError> {
    let lost = |e: russh::Error| ExecError::Failed(format!("ssh channel failed: {e}"));
    let wrapped = command.starts_with(MARKER_PREFIX);
    channel.exec(true, command).await.map_err(lost)?;
    channel.eof().await.map_err(lost)?;
    let mut raw = Raw {
        stdout: Capped::new(cap),
        stderr: Capped::new(cap),
        ..Raw::default()
    };
    // stderr is held back until the process-group marker has been seen (or cannot come any more).
    let mut marker: Option<Vec<u8>> = wrapped.then(Vec::new);
    let mut exited = false;
    loop {
        match timeout_at(deadline, channel.wait()).await {
            Err(_) => {
                // sshd `killpg`s the session's process group on a signal request.
                let _ = channel.signal(Sig::KILL).await;
                let _ = channel.close().await;
                raw.timed_out = true;
                raw.status = None;
                break;
            }
            Ok(None) | Ok(Some(ChannelMsg::Close)) => break,
            Ok(Some(msg)) => match msg {
                ChannelMsg::Data { data } => raw.stdout.push(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => match marker.as_mut() {
                    None => raw.stderr.push(&data),
                    Some(pending) => {
                        pending.extend_from_slice(&data);
                        if let Some((pgid, rest)) = take_marker(pending) {
                            raw.pgid = Some(pgid);
                            raw.stderr.push(&rest);
                            marker = None;
                        } else if pending.len() > MARKER_SEARCH_LIMIT {
                            raw.stderr.push(pending);
                            marker = None;
                        }
                    }
                },
                ChannelMsg::ExitStatus { exit_status } => {
                    raw.status = i32::try_from(exit_status).ok();
                    exited = true;
                }
                ChannelMsg::ExitSignal { .. } => exited = true,
                ChannelMsg::Failure => {
                    return Err(ExecError::Failed("the server refused to run the command".into()));
                }
                _ => {}
            },
        }
    }
    if let Some(pending) = marker {
        raw.stderr.push(&pending);
    }
    if !raw.timed_out && !exited {
        return Err(ExecError::Failed(
            "the connection closed before the command finished".into(),
        ));
    }
    Ok(raw)
}

#[derive(Default)]
pub(super) struct Raw {
    pub(super) stdout: Capped,
    pub(super) stderr: Capped,
    pub(super) status: Option<i32>,
    pub(super) timed_out: bool,
    /// The remote session's process group, from the marker line.
    pub(super) pgid: Option<u32>,
}

/// A command on a channel of its own runs as `echo MARKER$$ >&2; COMMAND`: sshd makes the
/// session's shell a session and process-group leader, so `$$` names the group to kill on
/// timeout (what the shell starts stays in it). The marker line is removed from stderr.
const MARKER: &str = "tailopsmcp-pgid:";

const MARKER_PREFIX: &[u8] = b"echo tailopsmcp-pgid:";

/// Startup noise (e.g. from a shell rc file) tolerated before the marker on stderr.
const MARKER_SEARCH_LIMIT: usize = 64 * 1024;

pub(super) fn wrap(line: &str) -> Vec<u8> {
    format!("echo {MARKER}$$ >&2; {line}").into_bytes()
}

/// Finds `MARKER<digits>\n` in `pending`; returns the pid and the bytes around the line.
fn take_marker(pending: &[u8]) -> Option<(u32, Vec<u8>)> {
    let start = pending.windows(MARKER.len()).position(|w| w == MARKER.as_bytes())?;
    let digits_at = start + MARKER.len();
    let end = digits_at + pending[digits_at..].iter().position(|&b| b == b'\n')?;
    let pgid = std::str::from_utf8(&pending[digits_at..end]).ok()?.parse().ok()?;
    let mut rest = pending[..start].to_vec();
    rest.extend_from_slice(&pending[end + 1..]);
    Some((pgid, rest))
}

/// A persistent `/bin/sh` on one session channel of a connection: commands are written to its
/// stdin one at a time, each followed by end lines carrying a per-command random nonce, so a
/// command costs no new channel, no fork of sshd's session child and no login-shell start-up.
pub(super) struct Shell {
    pub(super) conn: Arc<Connection>,
    pub(super) channel: russh::Channel<client::Msg>,
    /// The shell's pid, which is also its process group (what a timeout kills).
    pub(super) pgid: u32,
}

impl Shell {
    /// Still on a live connection and silent while idle (an idle shell that sent anything, an
    /// EOF or a close, has ended or misbehaved).
    pub(super) fn usable(&mut self) -> bool {
        use futures::FutureExt;
        self.conn.alive() && self.channel.wait().now_or_never().is_none()
    }

    pub(super) async fn discard(self) {
        let _ = self.channel.close().await;
    }
}

/// Programs that would change or end the persistent shell itself (its directory, environment,
/// options, traps, limits) if run in it: they get a channel of their own.
pub(super) const SHELL_STATEFUL: &[&str] = &[
    ".", ":", "alias", "bg", "break", "builtin", "cd", "command", "continue", "declare", "eval", "exec", "exit",
    "export", "fg", "getopts", "hash", "jobs", "local", "logout", "read", "readonly", "return", "set", "shift",
    "source", "times", "trap", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
];

/// What a persistent shell's channel runs: the login shell replaces itself with a plain POSIX sh
/// reading commands from the channel (same pid, so the same process group).
pub(super) const SHELL_START: &str = "exec /bin/sh";

/// Start of the end lines: `END<nonce>:<status>\n` on stdout, `END<nonce>\n` on stderr.
const SHELL_END: &str = "tailopsmcp-end-";

/// One command for a persistent shell: stdin from `/dev/null` (a command must not read the
/// following script), then the exit status and end lines. `line` is quoted words only.
pub(super) fn shell_script(line: &str, nonce: &str) -> bytes::Bytes {
    format!("{{ {line}\n}} </dev/null; printf '{SHELL_END}{nonce}:%d\\n' \"$?\"; printf '{SHELL_END}{nonce}\\n' >&2\n")
        .into()
}

/// Reads one command's output from a persistent shell until both end lines arrived.
pub(super) async fn shell_collect(
    channel: &mut russh::Channel<client::Msg>,
    nonce: &str,
    cap: usize,
    deadline: tokio::time::Instant,
) -> Result<Raw, ExecError> {
    let end = format!("{SHELL_END}{nonce}");
    let mut out = UntilEnd::new(&end, cap);
    let mut err = UntilEnd::new(&end, cap);
    let mut raw = Raw::default();
    while !(out.line().is_some() && err.line().is_some()) {
        match timeout_at(deadline, channel.wait()).await {
            Err(_) => {
                raw.timed_out = true;
                break;
            }
            Ok(Some(ChannelMsg::Data { data })) => out.push(&data),
            Ok(Some(ChannelMsg::ExtendedData { data, ext: 1 })) => err.push(&data),
            Ok(Some(ChannelMsg::WindowAdjusted { .. } | ChannelMsg::Success)) => {}
            Ok(Some(ChannelMsg::Failure)) => {
                return Err(ExecError::Failed("the server refused to start a shell".into()));
            }
            Ok(Some(_)) | Ok(None) => {
                return Err(ExecError::Failed(
                    "the remote shell ended before the command finished".into(),
                ));
            }
        }
    }
    if !raw.timed_out {
        let status = out.line().and_then(|l| l.strip_prefix(b":"));
        raw.status = status
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok());
        if raw.status.is_none() {
            return Err(ExecError::Failed("the remote shell sent a malformed end line".into()));
        }
    }
    raw.stdout = out.into_kept();
    raw.stderr = err.into_kept();
    Ok(raw)
}

/// One stream of a persistent shell: bytes before the end marker go to a [`Capped`]; the rest of
/// the end line is kept apart.
struct UntilEnd {
    end: Vec<u8>,
    kept: Capped,
    /// Bytes that may be the start of the end marker.
    pending: Vec<u8>,
    /// Bytes after the marker, once it was seen.
    after: Option<Vec<u8>>,
}

impl UntilEnd {
    fn new(end: &str, cap: usize) -> UntilEnd {
        UntilEnd {
            end: end.as_bytes().to_vec(),
            kept: Capped::new(cap),
            pending: Vec::new(),
            after: None,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if let Some(after) = self.after.as_mut() {
            after.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        let n = self.end.len();
        if let Some(at) = self.pending.windows(n).position(|w| w == self.end.as_slice()) {
            self.kept.push(&self.pending[..at]);
            self.after = Some(self.pending[at + n..].to_vec());
            self.pending.clear();
        } else if self.pending.len() >= n {
            let safe = self.pending.len() - (n - 1);
            self.kept.push(&self.pending[..safe]);
            self.pending.drain(..safe);
        }
    }

    /// What the command wrote: before the marker, or everything when it never came (timeout).
    fn into_kept(mut self) -> Capped {
        self.kept.push(&self.pending);
        self.kept
    }

    /// The rest of the end line (without its newline), once it is complete.
    fn line(&self) -> Option<&[u8]> {
        let after = self.after.as_deref()?;
        let newline = after.iter().position(|&b| b == b'\n')?;
        Some(&after[..newline])
    }
}

/// One output stream: the first `cap` bytes, and a count of the rest.
#[derive(Default)]
pub(super) struct Capped {
    pub(super) kept: Vec<u8>,
    pub(super) dropped: u64,
    pub(super) cap: usize,
}

impl Capped {
    fn new(cap: usize) -> Capped {
        Capped {
            kept: Vec::new(),
            dropped: 0,
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        let take = room.min(data.len());
        self.kept.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }

    /// The kept bytes as text and how many bytes were cut in all: when the cap split a UTF-8
    /// sequence, the partial sequence is cut too. Other invalid bytes become U+FFFD. A cut stream
    /// ends with the same marker line as the local process executor's (`\n[… N bytes cut]`).
    pub(super) fn into_text(self) -> (String, u64) {
        let (mut text, trimmed) = into_text(self.kept, self.dropped > 0);
        let cut = self.dropped + trimmed;
        if cut > 0 {
            text.push_str(&cut_marker(cut));
        }
        (text, cut)
    }
}

/// Returns the text and how many trailing bytes were trimmed.
fn into_text(mut bytes: Vec<u8>, was_cut: bool) -> (String, u64) {
    let mut trimmed = 0;
    if was_cut
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        trimmed = (bytes.len() - e.valid_up_to()) as u64;
        bytes.truncate(e.valid_up_to());
    }
    match String::from_utf8(bytes) {
        Ok(s) => (s, trimmed),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), trimmed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_group_marker_is_taken_out_of_stderr() {
        assert_eq!(wrap("'true'"), b"echo tailopsmcp-pgid:$$ >&2; 'true'".to_vec());
        assert!(wrap("x").starts_with(MARKER_PREFIX));
        assert_eq!(take_marker(b"tailopsmcp-pgid:123\nerr"), Some((123, b"err".to_vec())));
        assert_eq!(
            take_marker(b"rc noise\ntailopsmcp-pgid:7\n"),
            Some((7, b"rc noise\n".to_vec()))
        );
        assert_eq!(take_marker(b"tailopsmcp-pgid:12"), None); // incomplete: wait for more
    }

    #[test]
    fn end_marker_is_found_across_chunks() {
        let end = "tailopsmcp-end-abc";
        let stream = b"out\ntailopsmcp-end-a line\npartial tailopsmcp-end-abc:42\n";
        for split in 1..stream.len() {
            let mut u = UntilEnd::new(end, 1024);
            for chunk in stream.chunks(split) {
                u.push(chunk);
            }
            assert_eq!(u.line(), Some(&b":42"[..]), "chunks of {split}");
            let kept = u.into_kept().kept;
            assert_eq!(kept, b"out\ntailopsmcp-end-a line\npartial ", "chunks of {split}");
        }
        // No marker yet: nothing is lost, and the end line is not complete.
        let mut u = UntilEnd::new(end, 1024);
        u.push(b"no end tailopsmcp-end-ab");
        assert_eq!(u.line(), None);
        assert_eq!(u.into_kept().kept, b"no end tailopsmcp-end-ab");
        // The cap counts what the command wrote, not the end line.
        let mut u = UntilEnd::new(end, 4);
        u.push(b"0123456789tailopsmcp-end-abc:0\n");
        let kept = u.into_kept();
        assert_eq!((kept.kept.as_slice(), kept.dropped), (&b"0123"[..], 6));
    }

    #[test]
    fn output_cap_counts_and_keeps_utf8_whole() {
        let mut c = Capped::new(4);
        c.push(b"ab");
        c.push(b"cdef");
        assert_eq!((c.kept.as_slice(), c.dropped), (&b"abcd"[..], 2));
        // "aé" is 3 bytes; a cap of 2 splits the é: the partial byte is trimmed.
        assert_eq!(into_text("aé".as_bytes()[..2].to_vec(), true), ("a".to_string(), 1));
        assert_eq!(into_text(b"ok".to_vec(), false), ("ok".to_string(), 0));
        let mut c = Capped::new(2);
        c.push("aé".as_bytes());
        assert_eq!(c.into_text(), ("a\n[… 2 bytes cut]".to_string(), 2));
        let mut c = Capped::new(3);
        c.push("aé".as_bytes());
        assert_eq!(
            c.into_text(),
            ("aé".to_string(), 0),
            "exactly at the cap: nothing cut, no marker"
        );
    }
}
