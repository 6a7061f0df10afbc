use super::*;

#[test]
fn host_port_forms() {
    assert_eq!(
        parse_host_port("db.local:5432").unwrap(),
        HostPort {
            host: "db.local".into(),
            port: 5432
        }
    );
    assert_eq!(parse_host_port("[::1]:80").unwrap().host, "::1");
    assert!(parse_host_port("x").is_err());
    assert!(parse_host_port(":80").is_err());
    assert!(parse_host_port("x:http").is_err());
}

#[test]
fn jitter_is_uniform_enough() {
    let mut r = SplitMix::seeded("p");
    let xs: Vec<f64> = (0..10_000).map(|_| r.next_f64()).collect();
    assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    assert!((mean - 0.5).abs() < 0.02, "{mean}");
}

#[test]
fn bad_ca_pem_is_refused() {
    assert!(TlsSettings::new(Some(b"not a pem"), None, false).is_err());
    assert!(TlsSettings::new(None, Some("bad name!".into()), false).is_err());
    assert!(TlsSettings::new(None, None, true).is_ok());
}
