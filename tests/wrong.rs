//! Saying what is really wrong, through the binary: an outage whatever the
//! number of rows, an untrusted certificate (and a private CA trusted with
//! SSL_CERT_FILE), a dead proxy, a token URL that redirects, `expires_in`
//! as a string.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

use crate::common::*;

#[test]
fn three_rows_against_an_unreachable_api_are_an_outage_not_failures() {
    let dead = dead_api_url();
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("OT", 3)));
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .env("TRACKMASS_BASE_URL", &dead)
            .args(["--backoff-base", "10ms", "--summary", "s.json"]),
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("every request of this run (18) failed the same way without reaching the API")
            && err.contains("connection refused"),
        "{err}"
    );
    let s = json(&work.read("s.json"));
    assert_eq!(
        (s["pending"].as_u64(), s["failed"].as_u64()),
        (Some(3), Some(0)),
        "{s}"
    );
    // The rerun, with the API back, sends all three.
    let out = output(&mut work.run_against(&sandbox, "in.csv"));
    assert_exit(&out, 0);
    assert_eq!(sandbox.creations().len(), 3);
}

/// A private CA and a certificate for 127.0.0.1 that it signed, made with
/// the openssl command.
fn private_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (Debian: apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=trackmass test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// A TLS front on 127.0.0.1:0 that forwards every connection to `backend`;
/// returns its runtime, address and a count of handshakes attempted.
fn tls_front(
    cert: &Path,
    key: &Path,
    backend: SocketAddr,
) -> (tokio::runtime::Runtime, SocketAddr, Arc<AtomicU64>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_file(cert).expect("leaf.pem")];
    let key = PrivateKeyDer::from_pem_file(key).expect("leaf.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (runtime, listener, addr) = loopback_listener();
    let handshakes = Arc::new(AtomicU64::new(0));
    let counted = handshakes.clone();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (runtime, addr, handshakes)
}

#[test]
fn an_untrusted_certificate_is_not_retried_and_a_private_ca_can_be_trusted() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("TL", 3);
    work.write("in.csv", reference_csv(&refs));
    let (ca, leaf, key) = private_ca(work.dir.path());
    let backend: SocketAddr = sandbox
        .base_url()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("sandbox address");
    let (_rt, front, handshakes) = tls_front(&leaf, &key, backend);
    let https =
        |url: String| url.replace(&format!("http://{backend}"), &format!("https://{front}"));
    let run = |work: &Workdir| {
        let mut cmd = work.run_against(&sandbox, "in.csv");
        cmd.env("TRACKMASS_BASE_URL", https(sandbox.base_url()))
            .env("TRACKMASS_TOKEN_URL", https(sandbox.token_url()));
        cmd
    };
    // The system store (or whatever this environment trusts) does not
    // know the private CA.
    let out = output(&mut run(&work));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(
        err.contains("SSL_CERT_FILE") && err.contains("SSL_CERT_DIR"),
        "{err}"
    );
    // Refused at the token endpoint, once: no retry of a certificate error.
    assert_eq!(handshakes.load(Ordering::Relaxed), 1, "{err}");
    assert_eq!(sandbox.traffic(), (0, 0));

    let out = output(run(&work).env("SSL_CERT_FILE", &ca));
    assert_exit(&out, 0);
    sandbox.assert_results(&work.path("results.csv"), &refs);
}

#[test]
fn a_dead_proxy_is_named_as_the_proxy() {
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("PX", 3)));
    let dead = dead_api_url();
    let proxy = dead.trim_end_matches("/api-tracking-code-in-mass/v1");
    let mut cmd = work.trackmass();
    cmd.args(["run", "in.csv", "--base-url", "https://api.example.com/v1"])
        .args(["--token-url", "https://login.example.com/token"])
        .env("HTTPS_PROXY", proxy);
    with_credentials(&mut cmd);
    let out = output(&mut cmd);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the proxy {proxy}/ (from HTTPS_PROXY) could not be used"
        )),
        "{err}"
    );
    assert!(err.contains("login.example.com"), "{err}");
}

/// A token endpoint on 127.0.0.1:0 answering every POST with `status`,
/// these headers and this body.
fn token_endpoint(
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    body: String,
) -> (tokio::runtime::Runtime, String) {
    let app = Router::new().route(
        "/token",
        post(move || {
            let (headers, body) = (headers.clone(), body.clone());
            async move {
                let mut response = (status, body).into_response();
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .insert(name, value.parse().expect("header value"));
                }
                response
            }
        }),
    );
    let (runtime, addr) = serve_on_loopback(app);
    (runtime, format!("http://{addr}/token"))
}

#[test]
fn a_token_url_that_redirects_is_said_to_be_wrong() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("RD", 3)));
    let (_rt, token_url) = token_endpoint(
        StatusCode::FOUND,
        vec![(
            header::LOCATION,
            "https://login.example.com/auth/realms/x?session=abc".into(),
        )],
        String::new(),
    );
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .env("TRACKMASS_TOKEN_URL", &token_url),
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("redirect (HTTP 302 to https://login.example.com/auth/realms/x)")
            && err.contains("the token URL is probably wrong"),
        "{err}"
    );
    assert!(!err.contains("refused the client credentials"), "{err}");
    assert!(!err.contains("session=abc"), "{err}");
    assert_eq!(sandbox.traffic(), (0, 0));
}

#[test]
fn expires_in_as_a_numeric_string_is_accepted() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    let refs = references("EX", 4);
    work.write("in.csv", reference_csv(&refs));
    // A real token of the sandbox, announced the way some providers do.
    let body = format!(
        r#"{{"access_token":"{}","token_type":"Bearer","expires_in":"3599"}}"#,
        sandbox.access_token()
    );
    let (_rt, token_url) = token_endpoint(
        StatusCode::OK,
        vec![(header::CONTENT_TYPE, "application/json".into())],
        body,
    );
    let out = output(
        work.run_against(&sandbox, "in.csv")
            .env("TRACKMASS_TOKEN_URL", &token_url),
    );
    assert_exit(&out, 0);
    sandbox.assert_results(&work.path("results.csv"), &refs);
}

#[cfg(unix)]
#[test]
fn a_concurrency_the_open_files_limit_cannot_hold_is_refused_before_sending() {
    let sandbox = TestSandbox::start();
    let work = Workdir::new();
    work.write("in.csv", reference_csv(&references("FD", 3)));
    let binary = env!("CARGO_BIN_EXE_trackmass");
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(work.dir.path())
        .arg("-c")
        // Soft and hard limit alike: trackmass cannot raise it.
        .arg(format!(
            "ulimit -n 200 && exec {binary} run in.csv --concurrency 1024 --rate 2000/s"
        ))
        .env("TRACKMASS_BASE_URL", sandbox.base_url())
        .env("TRACKMASS_TOKEN_URL", sandbox.token_url());
    with_credentials(&mut cmd);
    let out = output(&mut cmd);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(
            "--concurrency 1024 needs about 1088 open files, and this process may open 200"
        ) && err.contains("use --concurrency 136 or less"),
        "{err}"
    );
    assert_eq!(sandbox.traffic(), (0, 0));
    // Under the same limit a concurrency that fits runs.
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(work.dir.path())
        .arg("-c")
        .arg(format!(
            "ulimit -n 200 && exec {binary} run in.csv --concurrency 100 --rate 2000/s"
        ))
        .env("TRACKMASS_BASE_URL", sandbox.base_url())
        .env("TRACKMASS_TOKEN_URL", sandbox.token_url());
    with_credentials(&mut cmd);
    assert_exit(&output(&mut cmd), 0);
}
