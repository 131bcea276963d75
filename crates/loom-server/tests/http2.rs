//! HTTP/2 without TLS (prior knowledge): the server speaks it, and one connection may carry many
//! runs' event streams at once (4,096, not hyper's default of 200).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use loom_agent::Agent;
use loom_server::{AppState, Server};

#[tokio::test]
async fn one_http2_connection_may_carry_4096_streams() {
    let agent = Agent::builder().model("echo").build().unwrap();
    let state = AppState::new(BTreeMap::from([("a".to_string(), agent)]), None, None);
    let server = Server::new(state, Default::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("http://{addr}/health")).body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    // The server's SETTINGS have arrived with its first answer.
    assert_eq!(client.current_max_send_streams(), 4096);
}
