//! The HTTP side's tests: credentials, tokens, transport failures.

use super::*;

#[test]
fn the_proxy_for_a_url_is_read_as_reqwest_reads_it() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let https = "https://api.example.com/v1";
    let p = proxy_for(
        https,
        env(&[("HTTPS_PROXY", "http://user:pw@proxy.corp:3128")]),
    )
    .unwrap();
    assert_eq!(p.url, "http://proxy.corp:3128/", "credentials left out");
    assert_eq!(p.variable, "HTTPS_PROXY");
    let p = proxy_for(
        https,
        env(&[("https_proxy", "http://p:1"), ("ALL_PROXY", "http://q:2")]),
    )
    .unwrap();
    assert_eq!(p.url, "http://p:1/");
    let p = proxy_for(https, env(&[("all_proxy", "http://q:2")])).unwrap();
    assert_eq!(p.variable, "ALL_PROXY");
    assert_eq!(proxy_for(https, env(&[("HTTP_PROXY", "http://p:1")])), None);
    for exempt in [
        "example.com",
        ".example.com",
        "api.example.com",
        "*",
        "x.org, example.com",
    ] {
        let vars: &'static [(&str, &str)] = Box::leak(Box::new([
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", exempt),
        ]));
        assert_eq!(proxy_for(https, env(vars)), None, "{exempt}");
    }
    assert!(
        proxy_for(
            https,
            env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "ample.com")])
        )
        .is_some()
    );
}

#[test]
fn expires_in_may_be_a_number_or_a_numeric_string() {
    let parse = |json: &str| {
        serde_json::from_str::<TokenResponse>(json)
            .unwrap()
            .expires_in
    };
    assert_eq!(
        parse(r#"{"access_token":"t","expires_in":3599}"#),
        Some(3599.0)
    );
    assert_eq!(
        parse(r#"{"access_token":"t","expires_in":"3599"}"#),
        Some(3599.0)
    );
    assert_eq!(
        parse(r#"{"access_token":"t","expires_in":" 60 "}"#),
        Some(60.0)
    );
    assert_eq!(parse(r#"{"access_token":"t","expires_in":"soon"}"#), None);
    assert_eq!(parse(r#"{"access_token":"t","expires_in":null}"#), None);
    assert_eq!(parse(r#"{"access_token":"t"}"#), None);
}

fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<Found> + 'a {
    move |k| {
        pairs.iter().find(|(n, _)| *n == k).map(|(n, v)| Found {
            value: v.to_string(),
            name: n.to_string(),
        })
    }
}

#[test]
fn a_ready_token_that_cannot_go_in_a_header_is_refused_at_start() {
    let credentials = Credentials {
        api_key: Secret::new("k"),
        token: TokenSource::Static(Secret::new("bad\ntoken")),
        names: CredentialNames::default(),
    };
    let settings = ApiSettings {
        base_url: "http://127.0.0.1:1".into(),
        token_url: "http://127.0.0.1:1/token".into(),
        timeout: Duration::from_secs(1),
        send_grant_type: true,
        pool: 1,
    };
    let Err(err) = Api::new(&settings, credentials) else {
        panic!("a token with a line break was accepted");
    };
    let err = err.to_string();
    assert!(err.contains(ENV_ACCESS_TOKEN), "{err}");
    assert!(!err.contains("bad"), "{err}");
}

#[test]
fn credentials_are_named_where_they_were_found() {
    let lookup = |var: &str| {
        let name = match var {
            ENV_API_KEY => "credentials.api_key in t.toml".to_string(),
            _ => var.to_string(),
        };
        let value = if var == ENV_ACCESS_TOKEN { "" } else { "v" };
        Some(Found {
            value: value.into(),
            name,
        })
    };
    let c = Credentials::from_lookup(lookup).unwrap();
    assert_eq!(c.names.api_key, "credentials.api_key in t.toml");
    assert_eq!(c.names.client_id, ENV_CLIENT_ID);
    // An empty token is missing: client credentials are used.
    assert!(matches!(c.token, TokenSource::Client { .. }));
}

#[test]
fn credentials_from_client_id_and_secret() {
    let c = Credentials::from_lookup(env(&[
        (ENV_API_KEY, "k"),
        (ENV_CLIENT_ID, "id"),
        (ENV_CLIENT_SECRET, "s"),
    ]))
    .unwrap();
    assert!(matches!(c.token, TokenSource::Client { .. }));
}

#[test]
fn a_ready_token_wins_over_client_credentials() {
    let c = Credentials::from_lookup(env(&[
        (ENV_API_KEY, "k"),
        (ENV_ACCESS_TOKEN, "t"),
        (ENV_CLIENT_ID, "id"),
    ]))
    .unwrap();
    assert!(matches!(c.token, TokenSource::Static(_)));
}

#[test]
fn missing_credentials_name_the_variables_and_the_sandbox() {
    let err = Credentials::from_lookup(env(&[])).unwrap_err().to_string();
    for name in [
        ENV_API_KEY,
        ENV_CLIENT_ID,
        ENV_CLIENT_SECRET,
        ENV_ACCESS_TOKEN,
        "--sandbox",
    ] {
        assert!(err.contains(name), "{err} lacks {name}");
    }
    let err = Credentials::from_lookup(env(&[(ENV_API_KEY, "k"), (ENV_CLIENT_ID, "id")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(ENV_CLIENT_SECRET) && !err.contains(ENV_API_KEY),
        "{err}"
    );
    let err = Credentials::from_lookup(env(&[(ENV_API_KEY, " "), (ENV_ACCESS_TOKEN, "t")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains(ENV_API_KEY), "{err}");
}

#[test]
fn loopback_detection() {
    assert!(is_loopback_url("http://127.0.0.1:8080/x"));
    assert!(is_loopback_url("http://[::1]:1/"));
    assert!(is_loopback_url("http://localhost/"));
    assert!(!is_loopback_url("http://10.0.0.1/"));
    assert!(!is_loopback_url(
        "https://soget-api-integration.azure-api.net/"
    ));
    assert!(!is_loopback_url("not a url"));
}

#[test]
fn token_lifetimes_are_bounded() {
    assert_eq!(token_lifetime(Some(300.0)), Duration::from_secs(300));
    assert_eq!(token_lifetime(None), Duration::from_secs(300));
    assert_eq!(token_lifetime(Some(1e300)), Duration::from_secs(86_400));
    assert_eq!(token_lifetime(Some(f64::NAN)), Duration::from_secs(300));
    assert_eq!(token_lifetime(Some(0.01)), Duration::from_secs(1));
}

#[test]
fn refresh_margin_is_a_fifth_up_to_a_minute() {
    assert_eq!(
        refresh_margin(Duration::from_secs(300)),
        Duration::from_secs(60)
    );
    assert_eq!(
        refresh_margin(Duration::from_secs(5)),
        Duration::from_secs(1)
    );
    assert_eq!(
        refresh_margin(Duration::from_secs(3600)),
        Duration::from_secs(60)
    );
}
