//! The HTTP API's connection hygiene against what an attacker on the network can do cheaply:
//! slowloris (headers a line at a time), silent connections, thousands of connections, and a
//! request that never finishes at shutdown. Over real TCP sockets on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::time::Duration;

use axum::{Router, routing::get};
use server::ConnLimits;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

const DEADLINE: Duration = Duration::from_secs(20);

struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ConnLimits) -> Running {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/forever", get(std::future::pending::<&'static str>));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(server::serve(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
        limits,
    ));
    Running { addr, stop, served }
}

/// `GET /healthz` on a new connection: the status line, or `None` if the server closed it.
async fn healthz(addr: std::net::SocketAddr) -> Option<String> {
    let mut conn = TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, conn.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    answer.lines().next().map(str::to_owned)
}

/// Whether the server closes `conn` within the deadline.
async fn closed_by_server(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

fn limits() -> ConnLimits {
    ConnLimits {
        max_connections: 16,
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_millis(500),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_surplus_connections_are_closed() {
    let running = start(limits()).await;
    assert_eq!(
        healthz(running.addr).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );

    // Slowloris: a request line, then a header line every 100 ms, never the blank line.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut conn = TcpStream::connect(running.addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        slow.push(conn);
    }
    let dripping = tokio::spawn(async move {
        let mut open = slow;
        for i in 0..200 {
            let mut still = Vec::new();
            for mut conn in open {
                if conn
                    .write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
                    .await
                    .is_ok()
                {
                    still.push(conn);
                }
            }
            open = still;
            if open.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        open
    });
    // Silent connections, and more than the limit allows.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(running.addr).await.unwrap());
    }
    for conn in &mut silent {
        assert!(
            closed_by_server(conn).await,
            "a silent connection stays open"
        );
    }
    // Every dripping connection is closed long before its 200 lines (20 s) are sent: a
    // closed one fails to write at the latest on its second write after the close.
    let left = tokio::time::timeout(Duration::from_secs(30), dripping)
        .await
        .expect("the dripping ends")
        .unwrap();
    assert!(
        left.is_empty(),
        "{} slowloris connections still open after 20 s",
        left.len()
    );
    // And the server still answers.
    assert_eq!(
        healthz(running.addr).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );

    // A keep-alive connection that goes quiet after its request is closed too.
    let mut quiet = TcpStream::connect(running.addr).await.unwrap();
    quiet
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut quiet).await,
        "an idle connection stays open"
    );

    running.stop.send(()).unwrap();
    running.served.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_ends_does_not_hold_up_shutdown() {
    let running = start(limits()).await;
    let mut hanging = TcpStream::connect(running.addr).await.unwrap();
    hanging
        .write_all(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The request is in flight once the server answers another one after it.
    assert_eq!(
        healthz(running.addr).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    running.stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, running.served)
        .await
        .expect("the server stops within its grace")
        .unwrap()
        .unwrap();
}
