//! `DATABASE_URL`: what lethe accepts before anything connects, and how a URL is shown.
//!
//! Shown (errors, `lethe check`, logs), a URL never carries a secret. Generated passwords hold
//! `/`, `?`, `#`, `@` and `%`, which a URL reader would take for the end of the authority, so
//! the user information is read as ending at the last `@` of the whole URL: masking a host with
//! it is better than showing part of a password. A query parameter is masked when its name,
//! decoded as the driver decodes it (`pass%77ord` is `password`), names a secret.
//!
//! Accepted: a PostgreSQL URL whose every parameter the driver knows (sqlx logs an unknown one
//! with its value, and ignores it), and a SQLite URL with no parameters at all (`vfs=unix-none`,
//! `immutable=1` or `mode=memory` would turn off the locking the audit chain and the run lock
//! rely on, or open a database that is not the platform's).

use anyhow::{Result, bail};

/// The parameters sqlx's PostgreSQL driver reads from a URL (besides `options[NAME]`).
const PG_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Where the query starts: the first `?` after the user information (which may hold one).
fn split_query(url: &str) -> (&str, Option<&str>) {
    let from = url.rfind('@').map_or(0, |at| at + 1);
    match url[from..].find('?') {
        Some(q) => (&url[..from + q], Some(&url[from + q + 1..])),
        None => (url, None),
    }
}

/// A query parameter's name as the driver reads it: form-decoded (`+` a space, `%XX` a byte).
fn decoded_name(param: &str) -> String {
    let name = param.split_once('=').map_or(param, |(k, _)| k);
    url::form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "auth"]
        .iter()
        .any(|s| n.contains(s))
}

/// The URL without its secrets: the password of the user information (`user:***@host`) and
/// every parameter whose decoded name names a secret (`password=***`). Works on any text,
/// parseable or not.
pub fn redact_url(url: &str) -> String {
    let (head, query) = split_query(url);
    let from = head.find("://").map_or(0, |i| i + 3);
    let mut out = match head[from..].rfind('@') {
        Some(at) => {
            let info = &head[from..from + at];
            let shown = info.find(':').map_or(info, |c| &info[..c]);
            let masked = if shown.len() < info.len() { ":***" } else { "" };
            format!("{}{shown}{masked}{}", &head[..from], &head[from + at..])
        }
        None => head.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| {
                if is_secret(&decoded_name(p)) {
                    format!("{}=***", p.split_once('=').map_or(p, |(k, _)| k))
                } else {
                    p.to_string()
                }
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Refuses parameters lethe's drivers would ignore (logging their values) or that turn off
/// what lethe relies on; names the parameter, never its value.
pub fn check_params(url: &str, sqlite: bool) -> Result<()> {
    let (_, Some(query)) = split_query(url) else {
        return Ok(());
    };
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let name = decoded_name(param);
        if sqlite {
            bail!(
                "DATABASE_URL gives the SQLite parameter `{name}`: lethe takes a SQLite URL \
                 without parameters (sqlite:///path/to/platform.db), since options such as \
                 `vfs`, `immutable` or `mode` can turn off the locking its audit log and run \
                 lock rely on"
            );
        }
        let known = PG_PARAMS.contains(&name.as_str())
            || (name.starts_with("options[") && name.ends_with(']'));
        if !known {
            bail!(
                "DATABASE_URL has a parameter `{}` that lethe's PostgreSQL driver does not know \
                 (it would be ignored): check its spelling; the known ones are {}",
                name.escape_debug(),
                PG_PARAMS.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_a_redacted_url() {
        assert_eq!(
            redact_url("postgres://lethe:s3cret@db:5432/platform"),
            "postgres://lethe:***@db:5432/platform"
        );
        assert_eq!(
            redact_url("postgres://db/platform?user=lethe&password=s3cret&sslmode=require"),
            "postgres://db/platform?user=lethe&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("sqlite:///srv/platform.db"),
            "sqlite:///srv/platform.db"
        );
        assert_eq!(redact_url("postgres://lethe@db/x"), "postgres://lethe@db/x");
        for secret in [
            "s3cr/et", "s3cr?et", "s3cr@et", "s3cr#et", "12/et", "50%off", "a:b",
        ] {
            let shown = redact_url(&format!("postgres://lethe:{secret}@127.0.0.1:5432/x"));
            assert_eq!(shown, "postgres://lethe:***@127.0.0.1:5432/x", "{secret}");
        }
        for name in ["pass%77ord", "PASSWORD", "p%61ssword", "sslpassword"] {
            let shown = redact_url(&format!("postgres://db/x?{name}=s3cret&sslmode=require"));
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        // A URL that parses as nothing at all is still masked.
        assert!(!redact_url("lethe:s3cret@").contains("s3cret"));
    }

    #[test]
    fn parameters_are_checked_by_name_never_shown_by_value() {
        assert!(
            check_params(
                "postgres://u:p?x@db/x?sslmode=require&options[search_path]=a",
                false
            )
            .is_ok()
        );
        let e = check_params("postgres://db/x?sslmod=require&pwd=s3cret", false).unwrap_err();
        assert!(e.to_string().contains("`sslmod`") && !e.to_string().contains("s3cret"));
        for url in [
            "sqlite:///srv/p.db?vfs=unix-none",
            "sqlite:///srv/p.db?immutable=1",
            "sqlite:///srv/p.db?mode=memory",
        ] {
            assert!(check_params(url, true).is_err(), "{url}");
        }
        assert!(check_params("sqlite:///srv/p.db", true).is_ok());
    }
}
