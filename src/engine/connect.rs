//! What a run sends to: the API with the user's credentials, or the
//! in-process sandbox with its own for `--sandbox`.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};

use crate::api::{Api, ApiSettings, CredentialNames, Credentials, TokenSource};
use crate::config::RunConfig;
use crate::sandbox;
use crate::secret::Secret;

/// The API client, against the in-process sandbox for `--sandbox`.
pub async fn connect(
    config: &RunConfig,
    credentials: Option<Credentials>,
) -> Result<(Option<sandbox::Sandbox>, Api)> {
    let (sandbox, credentials, base_url, token_url) = match credentials {
        Some(credentials) => (
            None,
            credentials,
            config.base_url.clone(),
            config.token_url.clone(),
        ),
        None => {
            let sb = sandbox::start(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                sandbox::Config::default(),
            )
            .await
            .context("cannot start the sandbox")?;
            tracing::info!("sandbox listening on http://{}", sb.addr());
            let credentials = Credentials {
                api_key: Secret::new(sandbox::API_KEY),
                token: TokenSource::Client {
                    client_id: Secret::new(sandbox::CLIENT_ID),
                    client_secret: Secret::new(sandbox::CLIENT_SECRET),
                },
                names: CredentialNames::default(),
            };
            let (b, t) = (sb.base_url(), sb.token_url());
            (Some(sb), credentials, b, t)
        }
    };
    let api = Api::new(
        &ApiSettings {
            base_url,
            token_url,
            timeout: config.dispatch.timeout,
            send_grant_type: config.send_grant_type,
            pool: config.dispatch.concurrency,
        },
        credentials,
    )?;
    Ok((sandbox, api))
}
