//! `loom_server::listen` (what `loom serve` listens with): a burst of new connections waits in the
//! backlog instead of losing its first packets (std's `TcpListener::bind` queues 128; past them
//! the kernel drops a connection's SYN and the client waits for a retransmission, 1 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[tokio::test]
async fn a_burst_of_connections_waits_in_the_backlog() {
    let listener = loom_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    // Nothing accepts: every connection has to wait in the backlog.
    let burst = 600;
    let connects =
        (0..burst).map(|_| tokio::time::timeout(Duration::from_millis(700), tokio::net::TcpStream::connect(addr)));
    let results = futures::future::join_all(connects).await;
    let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(connected, burst, "connections completed before the timeout");
    drop(listener);
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let first = loom_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.local_addr().unwrap();
    let err = loom_server::listen(addr).unwrap_err().to_string();
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}
