//! `mistral-run serve`: the OpenAI- and Mistral-compatible HTTP server
//! (crates/server) on a model loaded with the usual flags.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use mistral_server::ServerConfig;

use crate::model_args::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on. Loopback by default; another address serves
    /// every machine that can reach it (use --api-key).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one (see --port-file).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Write the port listened on to this file once the server accepts connections.
    #[arg(long = "port-file", value_name = "FILE")]
    pub port_file: Option<PathBuf>,
    /// Requests decoding at once, each with its own session and KV cache
    /// (--ctx-size tokens each); they share the weights and batched steps.
    #[arg(long, visible_alias = "np", default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Requests waiting beyond --parallel; when full, requests get 503 with Retry-After.
    #[arg(long = "max-queue", default_value_t = 64, value_name = "N")]
    pub max_queue: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health and the
    /// chat page (default: $MISTRAL_RUN_API_KEY, else none).
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_key: Option<String>,
    /// The model's id in /v1/models and responses (default: the file name without .gguf).
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,
    /// Largest request body in bytes.
    #[arg(long = "max-body", default_value_t = 4 << 20, value_name = "BYTES")]
    pub max_body: usize,
    /// Seconds a client may take to send a request's headers or body.
    #[arg(long = "read-timeout", default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout: u64,
    /// On SIGINT/SIGTERM: seconds in-flight requests get to finish before they are cancelled.
    #[arg(long = "shutdown-grace", default_value_t = 10, value_name = "SECS")]
    pub shutdown_grace: u64,
    /// Run every prompt whole in an empty context unless a request asks for
    /// `cache_prompt: true`. By default a request reuses the cached start of
    /// an earlier one (a chat's next turn runs only its new tokens), which
    /// can change a greedy answer where two tokens score almost the same:
    /// the kernels round differently with the number of tokens run together.
    #[arg(long = "no-cache-prompt")]
    pub no_cache_prompt: bool,
}

pub fn run(args: Args) -> Result<()> {
    // The server's log (start, shutdown, connection errors) on stderr;
    // $MISTRAL_RUN_LOG filters it (tracing's EnvFilter syntax).
    let filter = tracing_subscriber::EnvFilter::try_from_env("MISTRAL_RUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,mistral_server=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("MISTRAL_RUN_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let path = args.model.path()?;
    let model_id = args.alias.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| "model".into())
    });
    let addr = SocketAddr::new(args.host, args.port);
    // Bind before loading, so a taken port fails at once.
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let (model, load_time) = args.model.load_for(usize::from(args.parallel))?;
    let cfg = ServerConfig {
        addr: bound,
        model_id,
        parallel: usize::from(args.parallel),
        max_queue: args.max_queue,
        api_key,
        max_body_bytes: args.max_body,
        read_timeout: Duration::from_secs(args.read_timeout),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        cache_prompt: !args.no_cache_prompt,
        ..ServerConfig::new("")
    };
    if !args.host.is_loopback() && cfg.api_key.is_none() {
        eprintln!("warning: listening on {bound}, beyond this machine, without --api-key");
    }
    eprintln!(
        "serving {} on http://{bound}/ ({} sessions of {} tokens; loaded in {:.1} s)",
        cfg.model_id,
        cfg.parallel,
        model.config().cache.capacity(),
        load_time.as_secs_f64()
    );
    if let Some(f) = &args.port_file {
        // Written whole, then renamed: a reader never sees half a number.
        let tmp = f.with_extension("tmp");
        let mut w = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        writeln!(w, "{}", bound.port())?;
        drop(w);
        std::fs::rename(&tmp, f).with_context(|| format!("cannot write {}", f.display()))?;
    }
    mistral_server::run(model, cfg, listener)?;
    eprintln!("server stopped");
    Ok(())
}
