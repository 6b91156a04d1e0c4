//! The accept loop of `cpack serve`: hyper under the axum router, with the
//! limits a server on a network needs and `axum::serve` does not set. A
//! client that opens a connection and sends nothing, or half a header,
//! is cut off after the read timeout; one that announces a body and sends
//! part of it gets a 408 after the same timeout (see `http`); and at most
//! `max_connections` are open at once — the next ones get a 503 and are
//! closed, so slow or idle clients cannot use up the process's files.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// What the server allows each client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time for a request's header, and for its body, to arrive; also how
    /// long an idle keep-alive connection stays open.
    pub read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of files or a connection reset before accept: the
                // listener itself is fine; pause so a burst does not spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (app, stopping) = (app.clone(), stopping.clone());
                tokio::spawn(async move {
                    connection(stream, app, limits.read_timeout, stopping).await;
                    drop(slot);
                });
            }
            Err(_) => {
                tokio::spawn(refuse(stream, limits.max_connections));
            }
        }
    }
    let _ = stop.send(true);
    // Every slot back means every connection has finished.
    let all = limits.max_connections as u32;
    let _ = tokio::time::timeout(limits.read_timeout * 3, slots.acquire_many(all)).await;
}

/// One HTTP/1.1 connection, closed after `read_timeout` without a request.
async fn connection(
    stream: TcpStream,
    app: Router,
    read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let service = TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopping.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut stream: TcpStream, max_connections: usize) {
    let body = serde_json::json!({
        "error": format!("the server has {max_connections} connections open, its limit; retry shortly")
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
