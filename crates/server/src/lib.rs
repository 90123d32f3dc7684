//! `mistral-run serve`: an OpenAI- and Mistral-compatible HTTP server over
//! the engine's continuous-batching [`mistral_transformer::Engine`], so that
//! concurrent requests share one copy of the weights and decode in the same
//! batched steps.
//!
//! Routes: `POST /v1/chat/completions`, `/v1/completions`,
//! `/v1/fim/completions` (streamed as server-sent events with
//! `"stream": true`), `/v1/embeddings`; `GET /v1/models`, `/health`,
//! `/metrics` (Prometheus text) and a chat page at `/`.
//!
//! ```no_run
//! use mistral_server::ServerConfig;
//! use mistral_transformer::{LoadOptions, Model};
//!
//! let model = Model::load("model.gguf", LoadOptions::default())?;
//! let config = ServerConfig::new("model");
//! let listener = std::net::TcpListener::bind(config.addr)?;
//! mistral_server::run(model, config, listener)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
mod fim;
mod http;
mod jobs;
mod metrics;
mod page;
mod protocol;
mod routes;
mod state;

use std::sync::Arc;
use std::time::Duration;

pub use config::ServerConfig;
pub use error::ServerError;

/// Serves `model` on `listener` (already bound: the caller learns the port)
/// until SIGINT or SIGTERM, then shuts down gracefully: no new connections,
/// in-flight requests get `config.shutdown_grace` to finish, the rest are
/// cancelled. Blocks; runs its own async runtime.
pub fn run(
    model: mistral_transformer::Model,
    config: ServerConfig,
    listener: std::net::TcpListener,
) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mistral-run-http")
        .enable_all()
        .build()?;
    let result = rt.block_on(serve(model, config, listener, shutdown_signal()));
    // Streams still open after the grace period end here.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// [`run`] inside a runtime of the caller's, stopping when `shutdown`
/// resolves (tests stop it this way).
pub async fn serve(
    model: mistral_transformer::Model,
    config: ServerConfig,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let state = Arc::new(state::AppState::new(model, config.clone())?);
    let sampler = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                state.metrics.sample(state.engine.status().generated_tokens);
            }
        })
    };
    let app = routes::router(state.clone());
    let clean = http::serve(listener, app, &config, shutdown).await;
    sampler.abort();
    if !clean {
        tracing::warn!("grace period over: cancelling the requests still running");
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("signal received: shutting down");
}
