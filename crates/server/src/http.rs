//! The HTTP/1.1 listener: per-connection limits (header size and read
//! timeout against slowloris clients, a cap on open connections) and
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;

/// Largest request head (request line and headers) in bytes; more is a 431.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most headers in one request; more is a 431.
const MAX_HEADERS: usize = 64;

/// Accepts connections until `shutdown` resolves, then waits up to
/// `cfg.shutdown_grace` for in-flight requests; returns whether they all
/// finished in time.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = open.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        "shutting down: waiting up to {:?} for {} connection(s)",
        cfg.shutdown_grace,
        graceful.count()
    );
    tokio::time::timeout(cfg.shutdown_grace, graceful.shutdown())
        .await
        .is_ok()
}
