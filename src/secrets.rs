//! The one rule set that decides which names hold secrets, and the redactions built on it: audit
//! arguments (`audit::redact`), container environments, labels and command lines
//! (`exec::docker`), and process command lines (`system_processes`, local and over SSH).
//!
//! A name is secret when, lowercased with `_`, `-`, `.` and spaces removed, it contains a
//! fragment of [`SECRET_FRAGMENTS`] (`DB_PASSWORD`, `apiKey`, `X-Auth-Token`), or when one of its
//! segments (split at `_`, `-`, `.`, spaces and lowercase→uppercase steps) is in
//! [`SECRET_SEGMENTS`] (`DB_PASS`, `ssh.key`, `dbPwd`), unless the whole name is in
//! [`NOT_SECRET`] (`PWD`, the working directory). It errs on the side of yes: `MAX_TOKENS` is
//! redacted; `KEYBOARD_LAYOUT`, `author` and `monkey` are not.
//!
//! Bottom module: pure functions, no imports of this crate, no IO. File-name deny lists
//! (`.ssh`, `*.key` in `exec::fs`) are about paths, not names, and live there.

/// What a redacted value is replaced with, everywhere.
pub const REDACTED: &str = "[REDACTED]";

/// Fragments (of the squashed, lowercase name) that make a name secret wherever they occur.
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "credential",
    "cookie",
    "connectionstring",
    "authkey",
];
/// Segments that make a name secret only as a whole segment (`DB_PASS`, not `PASSAGE`).
const SECRET_SEGMENTS: &[&str] = &[
    "key",
    "pass",
    "pwd",
    "pw",
    "auth",
    "dsn",
    "salt",
    "session",
    "sessionid",
];
/// Whole names (exact case) that look secret but are not.
const NOT_SECRET: &[&str] = &["PWD", "OLDPWD"];
/// Programs whose `-pVALUE` is a password (`mysql -phunter2`), by the start of their file name.
const DASH_P_PASSWORD_PROGRAMS: &[&str] = &["mysql", "mariadb"];

/// Whether `name` (an argument key, environment variable, option or header name) holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    if NOT_SECRET.contains(&name) {
        return false;
    }
    let squashed = normalize(name);
    SECRET_FRAGMENTS.iter().any(|f| squashed.contains(f))
        || segments(name).any(|s| SECRET_SEGMENTS.contains(&s.as_str()))
}

/// `name` lowercased with `_`, `-`, `.` and spaces removed: `X-Api-Key`, `api_key` and `apiKey`
/// become `xapikey`/`apikey`.
pub fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// `NAME=value` with the value redacted when `NAME` is secret, or with the password of a URL's
/// user info redacted whatever the name (`postgres://u:[REDACTED]@db/app`). The second item says
/// whether anything was redacted. Without `=`, the entry is returned as is.
pub fn redact_env_assignment(entry: &str) -> (String, bool) {
    let Some((name, value)) = entry.split_once('=') else {
        return (entry.to_string(), false);
    };
    if is_secret_name(name) {
        return (format!("{name}={REDACTED}"), true);
    }
    match redact_url_password(value) {
        Some(v) => (format!("{name}={v}"), true),
        None => (entry.to_string(), false),
    }
}

/// A command line (arguments joined by spaces, as `ps` and `/proc/PID/cmdline` show it) with its
/// secrets redacted: `--password=x`, `--token x` (the next word), `-password=x`,
/// `PGPASSWORD=x`, `Authorization: x` (the rest of the line), a password in a URL's user info,
/// and `-pX` after a `mysql`/`mariadb` program. Spacing is kept.
pub fn redact_command_line(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    redact_words(&words).join(" ")
}

/// [`redact_command_line`] over an argument vector (each element one argument; an element
/// with spaces, such as `sh -c "…"`'s script, is redacted word by word inside).
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut state = State::default();
    for arg in argv {
        if arg.contains(' ') {
            out.push(redact_command_line(arg));
            state = State::default();
        } else {
            out.push(state.word(arg));
        }
    }
    out
}

#[derive(Default)]
struct State {
    /// The previous word was a secret option without a value (`--password`).
    next_is_secret: bool,
    /// A header-style `Authorization:` was seen: the rest of this run of words is its value.
    rest_is_secret: bool,
    /// A `mysql`-like program was named: `-pX` is a password.
    dash_p_password: bool,
}

impl State {
    fn word(&mut self, w: &str) -> String {
        if w.is_empty() {
            return String::new();
        }
        if self.rest_is_secret {
            return REDACTED.to_string();
        }
        if std::mem::take(&mut self.next_is_secret) && !w.starts_with('-') {
            return REDACTED.to_string();
        }
        let base = w.rsplit('/').next().unwrap_or(w);
        if DASH_P_PASSWORD_PROGRAMS.iter().any(|p| base.starts_with(p)) {
            self.dash_p_password = true;
        }
        if self.dash_p_password && w.len() > 2 && w.starts_with("-p") && !w.starts_with("--") {
            return format!("-p{REDACTED}");
        }
        if let Some(opt) = w.strip_prefix("--").or_else(|| w.strip_prefix('-')) {
            match opt.split_once('=') {
                Some((name, _)) if is_secret_name(name) => {
                    let dashes = &w[..w.len() - opt.len()];
                    return format!("{dashes}{name}={REDACTED}");
                }
                Some(_) => {}
                None => {
                    if is_secret_name(opt) {
                        self.next_is_secret = true;
                    }
                    return w.to_string();
                }
            }
        }
        if let Some(name) = w.strip_suffix(':')
            && is_header_name(name)
            && is_secret_name(name)
        {
            self.rest_is_secret = true;
            return w.to_string();
        }
        let (redacted, _) = redact_env_assignment(w);
        if redacted != w {
            return redacted;
        }
        redact_url_password(w).unwrap_or_else(|| w.to_string())
    }
}

fn redact_words(words: &[&str]) -> Vec<String> {
    let mut state = State::default();
    words.iter().map(|w| state.word(w)).collect()
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The segments of `name`, lowercase: split at `_`, `-`, `.`, spaces and camelCase steps.
fn segments(name: &str) -> impl Iterator<Item = String> + '_ {
    name.split(['_', '-', '.', ' ']).flat_map(|part| {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut prev_lower = false;
        for c in part.chars() {
            if c.is_uppercase() && prev_lower && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
            cur.extend(c.to_lowercase());
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    })
}

/// `scheme://user:password@rest` → `scheme://user:[REDACTED]@rest` (anywhere in `value`, for the
/// first URL); `None` when there is no password in a URL's user info.
pub fn redact_url_password(value: &str) -> Option<String> {
    let scheme_end = value.find("://")?;
    let after = &value[scheme_end + 3..];
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    let at = authority.rfind('@')?;
    let userinfo = &authority[..at];
    let colon = userinfo.find(':')?;
    let mut out = String::with_capacity(value.len());
    out.push_str(&value[..scheme_end + 3]);
    out.push_str(&userinfo[..colon + 1]);
    out.push_str(REDACTED);
    out.push_str(&after[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(name: &str, secret: bool) {
        assert_eq!(is_secret_name(name), secret, "{name:?}");
    }

    #[test]
    fn names() {
        for n in [
            "password",
            "DB_PASSWORD",
            "MY_CREDENTIALS",
            "API_KEY",
            "apiKey",
            "X-Api-Key",
            "Authorization",
            "Cookie",
            "Set-Cookie",
            "client_secret",
            "access_token",
            "MAX_TOKENS",
            "privateKey",
            "ssh_private_key",
            "key",
            "KEY",
            "pass",
            "Auth",
            "DB_PASS",
            "DB_PWD",
            "dbPwd",
            "db.pw",
            "SENTRY_DSN",
            "SESSION_SECRET",
            "session",
            "TS_AUTHKEY",
            "AWS_ACCESS_KEY_ID",
            "BASIC_AUTH",
            "MYSQL_ROOT_PASSWORD_FILE",
            "PGPASSWORD",
            "passphrase",
            "connection-string",
            "ssh_key",
            "password-file",
        ] {
            check_name(n, true);
        }
        for n in [
            "PWD",
            "OLDPWD",
            "PATH",
            "LANG",
            "KEYBOARD_LAYOUT",
            "keyboard",
            "passage",
            "author",
            "monkey",
            "path",
            "user",
            "env_keys",
            "name",
            "target",
            "",
        ] {
            check_name(n, false);
        }
    }

    fn check_line(input: &str, want: &str) {
        assert_eq!(redact_command_line(input), want, "{input:?}");
    }

    #[test]
    fn command_lines() {
        let r = REDACTED;
        check_line("app --password=hunter2 --x=1", &format!("app --password={r} --x=1"));
        check_line("app --password hunter2 run", &format!("app --password {r} run"));
        check_line("app --token abc --verbose", &format!("app --token {r} --verbose"));
        check_line("app --no-password --verbose", "app --no-password --verbose");
        check_line(
            "java -Dx=1 -password=s3 -jar a.jar",
            &format!("java -Dx=1 -password={r} -jar a.jar"),
        );
        check_line(
            "env PGPASSWORD=hunter2 psql -h db",
            &format!("env PGPASSWORD={r} psql -h db"),
        );
        check_line("PWD=/x ls", "PWD=/x ls");
        check_line(
            "psql postgres://app:hunter2@db/app",
            &format!("psql postgres://app:{r}@db/app"),
        );
        check_line("psql --dsn=postgres://app:hunter2@db/app", &format!("psql --dsn={r}"));
        check_line(
            "/usr/bin/mysql -uroot -phunter2 db",
            &format!("/usr/bin/mysql -uroot -p{r} db"),
        );
        check_line("mysqldump -p -h x", "mysqldump -p -h x");
        check_line("ssh -p2222 host", "ssh -p2222 host");
        check_line(
            "curl -H Authorization: Bearer abc",
            &format!("curl -H Authorization: {r} {r}"),
        );
        check_line("sleep  100", "sleep  100");
        check_line("", "");
        check_line(
            "--api-key=k --key=v --keyboard=us",
            &format!("--api-key={r} --key={r} --keyboard=us"),
        );
    }

    #[test]
    fn argv() {
        let argv: Vec<String> = ["sh", "-c", "mysql -phunter2 db", "--token", "t", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            redact_argv(&argv),
            vec!["sh", "-c", &format!("mysql -p{REDACTED} db"), "--token", REDACTED, "x"]
        );
    }

    #[test]
    fn env_assignments() {
        assert_eq!(
            redact_env_assignment("DB_PASSWORD=hunter2"),
            (format!("DB_PASSWORD={REDACTED}"), true)
        );
        assert_eq!(redact_env_assignment("LANG=C"), ("LANG=C".to_string(), false));
        assert_eq!(redact_env_assignment("NOVALUE"), ("NOVALUE".to_string(), false));
        assert_eq!(
            redact_env_assignment("DATABASE_URL=postgres://app:hunter2@db:5432/app"),
            (format!("DATABASE_URL=postgres://app:{REDACTED}@db:5432/app"), true)
        );
        assert_eq!(
            redact_env_assignment("UPSTREAM=http://host/x?a=b:c@d"),
            ("UPSTREAM=http://host/x?a=b:c@d".to_string(), false)
        );
    }
}
