//! The receiver's path token: the secret part of the URL registered with
//! SOGET (its payload carries no signature, so the path is what keeps
//! strangers out). 128 bits from the OS, as 32 lowercase hex digits (the
//! spec's `url` pattern takes `\w` in a path).
//!
//! It is kept beside the state file in `STATE.webhook-token` (mode 0600,
//! created without replacing or following anything; the BASE it was last
//! printed with on its second line), never in the state file, the events
//! store, a log or a result file: a request body or a run's settings that
//! hold it are stored with [`PLACEHOLDER`] in its place, put back only in
//! the request sent. `webhooks url` creates it on first use; the receiver
//! and `run --webhooks` read it.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Hex digits in a token (128 bits).
pub const LEN: usize = 32;

/// What stands for the token in the state file.
pub const PLACEHOLDER: &str = "{webhook-token}";

/// `text` with the token replaced by [`PLACEHOLDER`], for the state file.
pub fn mask<'a>(text: &'a str, token: Option<&Token>) -> Cow<'a, str> {
    match token {
        Some(t) if text.contains(t.as_str()) => Cow::Owned(text.replace(t.as_str(), PLACEHOLDER)),
        _ => Cow::Borrowed(text),
    }
}

/// `text` with the token put back, for the request; an error if it needs
/// one and there is none.
pub fn unmask<'a>(text: &'a str, token: Option<&Token>) -> Result<Cow<'a, str>, String> {
    if !text.contains(PLACEHOLDER) {
        return Ok(Cow::Borrowed(text));
    }
    match token {
        Some(t) => Ok(Cow::Owned(text.replace(PLACEHOLDER, t.as_str()))),
        None => Err(
            "rows register the receiver's URL, whose token file (STATE.webhook-token) is \
             gone: put it back, or run `trackmass webhooks url BASE` and `run --force` \
             with the new URL"
                .into(),
        ),
    }
}

/// A state file's receiver: its token and the BASE last printed with it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub token: Token,
    pub base: Option<String>,
}

impl Registration {
    /// The URL to register: `BASE/TOKEN`.
    pub fn url(&self, base: &str) -> String {
        format!("{}/{}", base.trim_end_matches('/'), self.token.as_str())
    }
}

/// A path token. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new token from the OS's random source.
    pub fn generate() -> Result<Token> {
        let mut bytes = [0u8; LEN / 2];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no random source for the webhook token: {e}"))?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    fn parse(text: &str) -> Option<Token> {
        let t = text.trim();
        (t.len() == LEN
            && t.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| Token(t.to_string()))
    }

    /// Whether `candidate` is this token, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff = u8::from(candidate.len() != mine.len());
        for (i, m) in mine.iter().enumerate() {
            diff |= m ^ candidate.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

/// The token file that goes with a state file.
pub fn path_for(state: &Path) -> PathBuf {
    let mut name = crate::paths::identity(state).into_os_string();
    name.push(".webhook-token");
    PathBuf::from(name)
}

/// Reads the token of `state`, `None` if there is none yet.
pub fn load(state: &Path) -> Result<Option<Token>> {
    Ok(load_registration(state)?.map(|r| r.token))
}

/// Reads the token of `state` and its BASE, `None` if there is none yet.
pub fn load_registration(state: &Path) -> Result<Option<Registration>> {
    let path = path_for(state);
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = match options.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!(
                "{}: is a symbolic link; the webhook token file must be a plain file trackmass made: remove it, then run `trackmass webhooks url` again",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{}: is {}, not the webhook token file trackmass made: remove it, then run \
             `trackmass webhooks url` again",
            path.display(),
            crate::paths::kind(&meta)
        );
    }
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut lines = text.lines();
    let base = lines
        .nth(1)
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string);
    match text.lines().next().and_then(Token::parse) {
        Some(token) => Ok(Some(Registration { token, base })),
        None => bail!(
            "{}: does not hold a webhook token ({LEN} lowercase hex digits); remove it \
             and run `trackmass webhooks url` again (the URL registered with it changes)",
            path.display()
        ),
    }
}

/// The token of `state`, created if there is none (0600, linked into
/// place without replacing a file another process made meanwhile), with
/// `base` recorded as the one last printed; `true` if it was created.
pub fn load_or_create(state: &Path, base: &str) -> Result<(Token, bool)> {
    let path = path_for(state);
    let (token, created) = match load_registration(state)? {
        Some(r) if r.base.as_deref() == Some(base) => return Ok((r.token, false)),
        Some(r) => (r.token, false),
        None => (Token::generate()?, true),
    };
    let mut temp = crate::output::temp_beside(&path, ".new", 0o600)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    writeln!(temp, "{}\n{base}", token.as_str())
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    if !created {
        // Ours, checked a plain file by load: the new BASE replaces it.
        temp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        return Ok((token, false));
    }
    match temp.persist_noclobber(&path) {
        Ok(_) => Ok((token, true)),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process made one first: theirs is the token.
            let theirs = load(state)?.context("the webhook token file vanished")?;
            Ok((theirs, false))
        }
        Err(e) => Err(e.error).with_context(|| format!("{}: cannot create", path.display())),
    }
}

/// Why SOGET would refuse `url` (the spec's `url` pattern), in words; `None`
/// if it passes.
pub fn why_refused(url: &str) -> Option<String> {
    if crate::spec::url_matches(url) {
        return None;
    }
    let parsed = url::Url::parse(url).ok();
    let host = parsed
        .as_ref()
        .and_then(|u| u.host_str())
        .unwrap_or_default();
    let reason = if parsed.as_ref().is_some_and(|u| u.port().is_some()) {
        "it names a port, which the pattern has no room for: put the receiver behind a \
         reverse proxy on 443 (see the README)"
            .to_string()
    } else if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        "its host is an IP address; the pattern takes a domain name ending in 2 to 6 letters"
            .to_string()
    } else if url.chars().any(|c| c.is_ascii_uppercase()) {
        "it has uppercase letters in its host; the pattern takes lowercase only".to_string()
    } else if parsed
        .as_ref()
        .is_some_and(|u| !matches!(u.scheme(), "http" | "https"))
    {
        "its scheme is not http or https".to_string()
    } else {
        "its host or path has characters the pattern does not take (a path takes \
         letters, digits, `_`, `-`, `.`, spaces and `/`; no query, no `%`)"
            .to_string()
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_128_bits_of_hex_and_fits_the_specs_url_pattern() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), LEN);
        assert!(Token::parse(a.as_str()).is_some());
        let url = format!(
            "https://hooks.transitaire-normand.fr/trackmass/{}",
            a.as_str()
        );
        assert_eq!(why_refused(&url), None, "{url}");
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn matching_takes_the_whole_token_and_nothing_else() {
        let t = Token::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert!(t.matches(b"0123456789abcdef0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdef0123456789abcde"));
        assert!(!t.matches(b"0123456789abcdef0123456789abcdef0"));
        assert!(!t.matches(b"1123456789abcdef0123456789abcdef"));
        assert!(!t.matches(b""));
        assert!(Token::parse("0123456789ABCDEF0123456789abcdef").is_none());
    }

    #[test]
    fn urls_soget_would_refuse_are_said_why() {
        for (url, why) in [
            ("http://127.0.0.1:8787/x", "port"),
            ("https://hooks.example.fr:8443/x", "port"),
            ("http://10.0.0.7/x", "IP address"),
            ("https://Hooks.Example.fr/x", "uppercase"),
            ("https://hooks.example.fr/x?y=1", "characters"),
        ] {
            let got = why_refused(url).unwrap_or_default();
            assert!(got.contains(why), "{url}: {got}");
        }
    }

    #[test]
    fn the_token_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        assert!(load(&state).unwrap().is_none());
        let (t, created) = load_or_create(&state, "https://a.example.fr").unwrap();
        assert!(created);
        let (again, created) = load_or_create(&state, "https://a.example.fr").unwrap();
        assert!(!created);
        assert_eq!(t, again);
        // Another BASE keeps the token and is recorded.
        let (other, _) = load_or_create(&state, "https://b.example.fr/x").unwrap();
        assert_eq!(t, other);
        let r = load_registration(&state).unwrap().unwrap();
        assert_eq!(r.base.as_deref(), Some("https://b.example.fr/x"));
        assert_eq!(
            r.url("https://b.example.fr/x/"),
            format!("https://b.example.fr/x/{}", t.as_str())
        );
        // Masked for the state file, put back for the request.
        let body = format!("{{\"url\":\"{}\"}}", r.url("https://b.example.fr/x"));
        let masked = mask(&body, Some(&t));
        assert!(
            !masked.contains(t.as_str()) && masked.contains(PLACEHOLDER),
            "{masked}"
        );
        assert_eq!(unmask(&masked, Some(&t)).unwrap(), body);
        assert!(unmask(&masked, None).is_err());
        assert_eq!(unmask("{}", None).unwrap(), "{}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path_for(&state))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(path_for(&state), "short\n").unwrap();
        assert!(
            load(&state)
                .unwrap_err()
                .to_string()
                .contains("does not hold")
        );
    }
}
