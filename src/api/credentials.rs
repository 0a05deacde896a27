//! Credentials: the subscription key and the token's source (a ready
//! token, or client credentials), looked up by name in the environment or
//! the configuration file, never from a flag.

use super::*;

/// Environment variables holding credentials.
pub const ENV_API_KEY: &str = "TRACKMASS_API_KEY";

pub const ENV_ACCESS_TOKEN: &str = "TRACKMASS_ACCESS_TOKEN";

pub const ENV_CLIENT_ID: &str = "TRACKMASS_CLIENT_ID";

pub const ENV_CLIENT_SECRET: &str = "TRACKMASS_CLIENT_SECRET";

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A ready token (`TRACKMASS_ACCESS_TOKEN`): used as is, never refreshed.
    Static(Secret),
    /// OAuth2 client credentials, exchanged at the token URL.
    Client {
        client_id: Secret,
        client_secret: Secret,
    },
}

/// Everything secret a run needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub api_key: Secret,
    pub token: TokenSource,
    /// Where each one came from, as messages name it.
    pub names: CredentialNames,
}

/// How messages name each credential: its environment variable, or the
/// key of the configuration file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialNames {
    pub api_key: String,
    pub client_id: String,
    pub client_secret: String,
    pub access_token: String,
}

impl Default for CredentialNames {
    fn default() -> CredentialNames {
        CredentialNames {
            api_key: ENV_API_KEY.into(),
            client_id: ENV_CLIENT_ID.into(),
            client_secret: ENV_CLIENT_SECRET.into(),
            access_token: ENV_ACCESS_TOKEN.into(),
        }
    }
}

/// A credential as looked up, and how messages name where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    pub name: String,
}

impl Credentials {
    /// Reads credentials with `lookup`, by environment variable name (the
    /// process environment, then the configuration file). Empty values
    /// count as missing.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<Found>,
    ) -> Result<Credentials, MissingCredentials> {
        let mut names = CredentialNames::default();
        let mut get = |var: &str| {
            let found = lookup(var).filter(|f| !f.value.trim().is_empty())?;
            let name = match var {
                ENV_API_KEY => &mut names.api_key,
                ENV_CLIENT_ID => &mut names.client_id,
                ENV_CLIENT_SECRET => &mut names.client_secret,
                _ => &mut names.access_token,
            };
            *name = found.name;
            Some(found.value)
        };
        let api_key = get(ENV_API_KEY);
        let token = get(ENV_ACCESS_TOKEN);
        let client_id = get(ENV_CLIENT_ID);
        let client_secret = get(ENV_CLIENT_SECRET);
        let mut missing = Vec::new();
        if api_key.is_none() {
            missing.push(ENV_API_KEY.to_string());
        }
        let token = match (token, client_id, client_secret) {
            (Some(t), _, _) => Some(TokenSource::Static(Secret::new(t))),
            (None, Some(id), Some(secret)) => Some(TokenSource::Client {
                client_id: Secret::new(id),
                client_secret: Secret::new(secret),
            }),
            (None, Some(_), None) => {
                missing.push(ENV_CLIENT_SECRET.to_string());
                None
            }
            (None, None, Some(_)) => {
                missing.push(ENV_CLIENT_ID.to_string());
                None
            }
            (None, None, None) => {
                missing.push(format!(
                    "{ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} (or {ENV_ACCESS_TOKEN})"
                ));
                None
            }
        };
        match (api_key, token) {
            (Some(key), Some(token)) if missing.is_empty() => Ok(Credentials {
                api_key: Secret::new(key),
                token,
                names,
            }),
            _ => Err(MissingCredentials(missing)),
        }
    }
}

/// Credentials a run needs and the environment (or the configuration file)
/// does not give: the variables to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "missing credentials: set {} in the environment (or try the job without an account: add --sandbox)",
    .0.join(", ")
)]
pub struct MissingCredentials(pub Vec<String>);
