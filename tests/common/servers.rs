//! Servers the tests talk to: HTTP(S) targets for probes, and the test
//! PKI that signs their certificates.

use super::*;

/// A small HTTP(S) server on its own runtime thread, for probes:
///   /status/N   answers N
///   /slow/MS    answers 200 after MS milliseconds
///   /text/T     answers 200 with body T
pub struct TestServer {
    pub addr: SocketAddr,
    /// The self-signed certificate (PEM) when serving TLS.
    pub ca_pem: Option<String>,
}

/// The certificate's notAfter, as a Unix time: 2031-05-17 00:00:00 UTC.
pub const TEST_CERT_NOT_AFTER: i64 = 1_936_742_400;

/// Accepts on a free loopback port, on a thread with its own runtime, and
/// runs `per_connection` as a task for each connection.
pub fn serve_on_thread<F, Fut>(per_connection: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(per_connection(stream));
            }
        });
    });
    rx.recv().unwrap()
}

pub fn test_server(tls: bool) -> TestServer {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let (tls_config, ca_pem) = if tls {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        (Some(std::sync::Arc::new(config)), Some(cert.pem()))
    } else {
        (None, None)
    };
    let acceptor = tls_config.map(tokio_rustls::TlsAcceptor::from);
    let addr = serve_on_thread(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let (status, body) = if let Some(code) = path.strip_prefix("/status/") {
                        (code.parse().unwrap(), format!("status {code}\n"))
                    } else if let Some(ms) = path.strip_prefix("/slow/") {
                        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
                        (200, "slow\n".to_string())
                    } else if let Some(t) = path.strip_prefix("/text/") {
                        (200, t.to_string())
                    } else {
                        (404, "no such test route\n".to_string())
                    };
                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                },
            );
            let http = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(a) => {
                    if let Ok(s) = a.accept(stream).await {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    }
                }
                None => {
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
            }
        }
    });
    TestServer { addr, ca_pem }
}

pub struct Pki {
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub client_cert: rustls::pki_types::CertificateDer<'static>,
    pub client_key: Vec<u8>,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, the
/// server's and the CA's written into `dir`.
pub fn pki(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(vec!["prometheus".to_string()]).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    Pki {
        ca_der: ca_cert.der().clone(),
        client_cert: client.der().clone(),
        client_key: client_key.serialize_der(),
    }
}
