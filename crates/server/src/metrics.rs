//! Counters for `/metrics` (Prometheus text format).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mistral_transformer::EngineStatus;

/// How far back the tok/s gauge looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Metrics {
    /// Responses by route and status.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    in_flight: Arc<AtomicU64>,
    ttft_micros: AtomicU64,
    ttft_count: AtomicU64,
    /// `(when, generated tokens so far)`, sampled once a second.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

/// Counts a generation request in flight while it lives.
pub struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn record_response(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    pub fn record_usage(&self, prompt: usize, completion: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion as u64, Ordering::Relaxed);
    }

    pub fn record_ttft(&self, t: Duration) {
        self.ttft_micros
            .fetch_add(t.as_micros() as u64, Ordering::Relaxed);
        self.ttft_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    /// Adds a sample of the engine's generated-token count.
    pub fn sample(&self, generated: u64) {
        if let Ok(mut s) = self.samples.lock() {
            let now = Instant::now();
            s.push_back((now, generated));
            while s.len() > 2 && now.duration_since(s[0].0) > RATE_WINDOW {
                s.pop_front();
            }
        }
    }

    /// Generated tokens per second over the last samples.
    fn rate(&self) -> f64 {
        let Ok(s) = self.samples.lock() else {
            return 0.0;
        };
        match (s.front(), s.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (b.1.saturating_sub(a.1)) as f64 / b.0.duration_since(a.0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, engine: &EngineStatus, queued_slots: usize) -> String {
        let mut o = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let requests: Vec<(String, String)> = self
            .requests
            .lock()
            .map(|m| {
                m.iter()
                    .map(|((route, status), n)| {
                        (
                            format!("{{route=\"{route}\",status=\"{status}\"}}"),
                            n.to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        metric(
            "mistral_run_requests_total",
            "counter",
            "HTTP responses by route and status.",
            &requests,
        );
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        // One value each: name, type, help, value.
        let single: [(&str, &str, &str, String); 13] = [
            (
                "mistral_run_requests_in_flight",
                "gauge",
                "Generation requests being answered.",
                load(&self.in_flight),
            ),
            (
                "mistral_run_prompt_tokens_total",
                "counter",
                "Prompt tokens of answered requests.",
                load(&self.prompt_tokens),
            ),
            (
                "mistral_run_completion_tokens_total",
                "counter",
                "Generated tokens of answered requests.",
                load(&self.completion_tokens),
            ),
            (
                "mistral_run_engine_prompt_tokens_total",
                "counter",
                "Prompt tokens the engine ran (reused context not counted).",
                engine.prompt_tokens.to_string(),
            ),
            (
                "mistral_run_engine_generated_tokens_total",
                "counter",
                "Tokens the engine sampled.",
                engine.generated_tokens.to_string(),
            ),
            (
                "mistral_run_engine_steps_total",
                "counter",
                "Batched forward passes the engine ran.",
                engine.steps.to_string(),
            ),
            (
                "mistral_run_tokens_per_second",
                "gauge",
                "Generated tokens per second over the last 10 seconds.",
                format!("{:.2}", self.rate()),
            ),
            (
                "mistral_run_queue_depth",
                "gauge",
                "Requests waiting for a session.",
                engine.waiting.to_string(),
            ),
            (
                "mistral_run_queue_slots_used",
                "gauge",
                "Choices running or waiting (limit: --parallel + --max-queue).",
                queued_slots.to_string(),
            ),
            (
                "mistral_run_sessions_active",
                "gauge",
                "Sessions running a request.",
                engine.running.to_string(),
            ),
            (
                "mistral_run_sessions_idle",
                "gauge",
                "Finished requests' sessions kept for their context.",
                engine.idle_sessions.to_string(),
            ),
            (
                "mistral_run_kv_cache_active_bytes",
                "gauge",
                "KV-cache bytes of running sessions.",
                engine.kv_cache_active_bytes.to_string(),
            ),
            (
                "mistral_run_kv_cache_bytes",
                "gauge",
                "KV-cache bytes of running and idle sessions.",
                engine.kv_cache_bytes.to_string(),
            ),
        ];
        for (name, kind, help, value) in single {
            metric(name, kind, help, &[(String::new(), value)]);
        }
        let sum = self.ttft_micros.load(Ordering::Relaxed) as f64 / 1e6;
        // A summary's lines carry `_sum` / `_count` after the name.
        metric(
            "mistral_run_time_to_first_token_seconds",
            "summary",
            "Time from a request's arrival to its first token.",
            &[
                ("_sum".to_string(), format!("{sum:.6}")),
                ("_count".to_string(), load(&self.ttft_count)),
            ],
        );
        o
    }
}
