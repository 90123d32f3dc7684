//! The server's settings, decided once when it starts.

use std::net::SocketAddr;
use std::time::Duration;

/// How the server listens and what it admits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (loopback unless asked otherwise).
    pub addr: SocketAddr,
    /// The model's id in `/v1/models` and in responses; requests naming
    /// another model get a 404.
    pub model_id: String,
    /// Requests decoding at once, each with its own session (llama-server's `--parallel`).
    pub parallel: usize,
    /// Requests waiting beyond `parallel`; a request finding the queue full
    /// gets 503 with `Retry-After`.
    pub max_queue: usize,
    /// With a key, every route but `/health` and the chat page needs
    /// `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Time a client may take to send a request's headers, and its body.
    pub read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// On SIGINT/SIGTERM: how long in-flight requests may take to finish
    /// before they are cancelled.
    pub shutdown_grace: Duration,
    /// Whether a request reuses the cached start of an earlier one's
    /// context unless it says `cache_prompt: false` (llama-server's
    /// default). Without it, every prompt runs whole in an empty context
    /// unless the request says `cache_prompt: true`: slower follow-up
    /// turns, but the same request always gives the same greedy answer.
    pub cache_prompt: bool,
}

impl ServerConfig {
    /// Loopback, port 8080, 4 sessions.
    pub fn new(model_id: impl Into<String>) -> ServerConfig {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model_id: model_id.into(),
            parallel: 4,
            max_queue: 64,
            api_key: None,
            max_body_bytes: 4 << 20,
            read_timeout: Duration::from_secs(10),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(10),
            cache_prompt: true,
        }
    }
}
