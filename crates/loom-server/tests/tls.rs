//! TLS through rustls when a certificate and key are configured (an rcgen certificate here).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("loom-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let settings = loom_agent::config::ServerConfig {
        tls_cert: Some(dir.join("cert.pem").display().to_string()),
        tls_key: Some(dir.join("key.pem").display().to_string()),
        ..Default::default()
    };
    let s = support::start_with(settings).await;
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}");
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{url}/health")).send().await {
            assert_eq!(r.status(), 200);
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "https answered");
    let r = client
        .post(format!("{url}/runs"))
        .bearer_auth(&s.key_a)
        .json(&serde_json::json!({"input": "over tls", "wait": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["output"], "Echo: over tls");
    // Plain HTTP to the TLS port gets no answer.
    assert!(s.http.get(format!("http://127.0.0.1:{port}/health")).send().await.is_err());
    std::fs::remove_dir_all(&dir).ok();
}
