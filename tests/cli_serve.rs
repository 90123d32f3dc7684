//! `mistral-run serve` end to end: the binary started on a free loopback
//! port with SmolLM2, driven over real sockets. Greedy answers are held
//! against `mistral-run run`, concurrent streams against the same prompts
//! alone, cancellation against the server's own `/metrics`, and a table of
//! malformed and hostile requests against the status each must get.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mistral-run");

fn model() -> PathBuf {
    mistral_test_support::smollm2_path()
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_model(&model(), extra)
    }

    fn start_model(model: &std::path::Path, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let child = Command::new(BIN)
            .args(["serve", "-m"])
            .arg(model)
            .args(["--port", "0", "-t", "2", "--port-file"])
            .arg(&port_file)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mistral-run serve");
        let start = Instant::now();
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                break s.trim().parse().unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Server {
            child,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// POSTs JSON; the status and the body as JSON.
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(path, body, None)
    }

    fn post_with(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut req = ureq::post(&self.url(path)).timeout(Duration::from_secs(120));
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        match req.send_json(body.clone()) {
            Ok(r) => (r.status(), r.into_json().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    fn get_text(&self, path: &str) -> (u16, String) {
        match ureq::get(&self.url(path)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// A gauge or counter of `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let (s, text) = self.get_text("/metrics");
        assert_eq!(s, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// Waits until no request runs and the running sessions' KV cache is empty.
    fn wait_idle(&self) {
        let start = Instant::now();
        loop {
            let active = self.metric("mistral_run_sessions_active");
            let kv = self.metric("mistral_run_kv_cache_active_bytes");
            let queued = self.metric("mistral_run_queue_slots_used");
            if active == 0.0 && kv == 0.0 && queued == 0.0 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "still {active} sessions, {kv} KV bytes, {queued} slots in use after 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Streams a request and returns the concatenated text of choice 0, the
/// number of content chunks, and the finish reason.
fn stream_text(server: &Server, path: &str, mut body: Value) -> (String, usize, String) {
    body["stream"] = json!(true);
    let r = ureq::post(&server.url(path))
        .timeout(Duration::from_secs(300))
        .send_json(body)
        .expect("stream request");
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let reader = BufReader::new(r.into_reader());
    let (mut text, mut chunks, mut finish) = (String::new(), 0, String::new());
    let mut done = false;
    for line in reader.lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        assert!(v.get("error").is_none(), "stream error: {v}");
        for c in v["choices"].as_array().unwrap() {
            let piece = c["delta"]["content"].as_str().or(c["text"].as_str());
            if let Some(p) = piece.filter(|p| !p.is_empty()) {
                text.push_str(p);
                chunks += 1;
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    assert!(done, "the stream ended without [DONE]");
    (text, chunks, finish)
}

#[test]
fn greedy_through_the_server_equals_run() {
    let server = Server::start(&["--parallel", "2"]);
    for prompt in [
        "The capital of France is",
        "Once upon a time, in a small village,",
    ] {
        let out = Command::new(BIN)
            .args(["run", "-t", "2", "-m"])
            .arg(model())
            .args(["-p", prompt, "-n", "24", "--temp", "0"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let expected = String::from_utf8(out.stdout).unwrap();
        let expected = expected.trim_end_matches('\n');
        let body = json!({"prompt": prompt, "max_tokens": 24, "temperature": 0});
        let (s, v) = server.post("/v1/completions", &body);
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["choices"][0]["text"].as_str().unwrap(),
            expected,
            "prompt {prompt:?}"
        );
        assert_eq!(v["usage"]["completion_tokens"], 24);
        let (streamed, _, finish) = stream_text(&server, "/v1/completions", body);
        assert_eq!(streamed, expected);
        assert_eq!(finish, "length");
    }
    // Chat: `run --chat` renders the same template.
    let out = Command::new(BIN)
        .args(["run", "--chat", "-t", "2", "-m"])
        .arg(model())
        .args(["-p", "Name three colors.", "-n", "20", "--temp", "0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let expected = String::from_utf8(out.stdout).unwrap();
    let body = json!({"messages": [{"role": "user", "content": "Name three colors."}],
                      "max_tokens": 20, "temperature": 0});
    let (s, v) = server.post("/v1/chat/completions", &body);
    assert_eq!(s, 200, "{v}");
    let got = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(got, expected.trim_end_matches('\n'));
}

#[test]
fn sixteen_concurrent_streams_each_equal_their_prompt_alone() {
    // Prompts whole in empty contexts: each concurrent request repeats one
    // run alone before.
    let server = Server::start(&["--parallel", "16", "--ctx-size", "512", "--no-cache-prompt"]);
    let prompts: Vec<String> = (0..16)
        .map(|i| format!("Write a sentence about the number {i}:"))
        .collect();
    let body = |p: &str| json!({"prompt": p, "max_tokens": 32, "temperature": 0});
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            let (s, v) = server.post("/v1/completions", &body(p));
            assert_eq!(s, 200, "{v}");
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    let start = Instant::now();
    let results: Vec<(String, usize, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                scope.spawn(move || stream_text(server, "/v1/completions", body(p)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut tokens = 0;
    for (i, ((text, chunks, finish), want)) in results.iter().zip(&alone).enumerate() {
        assert_eq!(text, want, "stream {i} differs from its prompt alone");
        assert!(!finish.is_empty(), "stream {i} has no finish reason");
        tokens += chunks;
    }
    eprintln!(
        "16 concurrent streams: {tokens} content chunks in {wall:.2} s, {:.1} tok/s aggregate",
        tokens as f64 / wall
    );
    server.wait_idle();
}

/// Opens a streamed request on a raw socket and returns the socket after
/// the response headers (and `chunks` SSE data lines) have arrived.
fn open_stream(server: &Server, body: &Value, chunks: usize) -> TcpStream {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut seen = 0;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while seen < chunks {
        s.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
        if buf.ends_with(b"\ndata: ") {
            seen += 1;
        }
    }
    s
}

/// Waits until a request runs.
fn wait_running(server: &Server) {
    let start = Instant::now();
    while server.metric("mistral_run_sessions_active") < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no request started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn disconnecting_clients_free_their_sessions() {
    let server = Server::start(&["--parallel", "4", "--ctx-size", "4096"]);
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(300);
    // Mid-prefill: the prompt takes seconds; leave after 300 ms.
    for _ in 0..2 {
        let body = json!({"prompt": long_prompt, "max_tokens": 2000, "stream": true});
        let s = open_stream(&server, &body, 0);
        wait_running(&server);
        s.shutdown(Shutdown::Both).unwrap();
        drop(s);
        server.wait_idle();
    }
    // Mid-decode: leave after a few chunks.
    let body = json!({"prompt": "Tell me a long story.", "max_tokens": 3000, "stream": true,
                      "ignore_eos": true});
    let s = open_stream(&server, &body, 4);
    drop(s);
    server.wait_idle();
    // A non-streamed request whose client leaves.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let b = json!({"prompt": "Tell me a long story.", "max_tokens": 3000, "ignore_eos": true})
        .to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    wait_running(&server);
    drop(s);
    server.wait_idle();
    // The server still answers.
    let (st, v) = server.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 4}));
    assert_eq!(st, 200, "{v}");
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let server = Server::start(&["--parallel", "1", "--max-queue", "1"]);
    let body = json!({"prompt": "Count:", "max_tokens": 2000, "ignore_eos": true, "stream": true});
    let a = open_stream(&server, &body, 1);
    let b = open_stream(&server, &body, 0);
    std::thread::sleep(Duration::from_millis(200));
    let r = ureq::post(&server.url("/v1/completions")).send_json(json!({"prompt": "x"}));
    match r {
        Err(ureq::Error::Status(503, resp)) => {
            assert_eq!(resp.header("retry-after"), Some("1"));
            let v: Value = resp.into_json().unwrap();
            assert!(v["error"]["message"].as_str().unwrap().contains("busy"));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    drop((a, b));
    server.wait_idle();
}

#[test]
fn api_key_guards_every_route_but_health() {
    let server = Server::start(&["--api-key", "s3cret"]);
    let (s, _) = server.get_text("/health");
    assert_eq!(s, 200);
    for path in ["/v1/models", "/metrics"] {
        let (s, body) = server.get_text(path);
        assert_eq!(s, 401, "{path}: {body}");
        assert!(body.contains("invalid_api_key"));
    }
    let body = json!({"prompt": "Hi", "max_tokens": 2});
    assert_eq!(server.post_with("/v1/completions", &body, None).0, 401);
    assert_eq!(
        server.post_with("/v1/completions", &body, Some("wrong")).0,
        401
    );
    assert_eq!(
        server
            .post_with("/v1/completions", &body, Some("s3cret!"))
            .0,
        401
    );
    assert_eq!(
        server.post_with("/v1/completions", &body, Some("s3cret")).0,
        200
    );
}

#[test]
fn sigterm_finishes_streams_in_flight_and_exits_zero() {
    let mut server = Server::start(&["--shutdown-grace", "20"]);
    let body = json!({"prompt": "Count:", "max_tokens": 40, "ignore_eos": true, "stream": true});
    let mut s = open_stream(&server, &body, 1);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("[DONE]"), "the stream was cut: {rest}");
    assert!(rest.contains("\"finish_reason\":\"length\""));
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    // Nothing listens any more.
    assert!(TcpStream::connect(server.addr()).is_err());
}

/// Sends raw bytes and returns the status code of the response (0: the
/// connection was closed without one).
fn raw_status(server: &Server, bytes: &[u8], pause: Option<Duration>) -> u16 {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // A peer that closes early may reset the connection mid-write.
    let _ = s.write_all(bytes);
    if let Some(p) = pause {
        std::thread::sleep(p);
    }
    let mut head = Vec::new();
    let _ = s.take(4096).read_to_end(&mut head);
    let text = String::from_utf8_lossy(&head);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn post_raw(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn malformed_and_hostile_requests_get_4xx_and_the_server_goes_on() {
    let server = Server::start(&[
        "--ctx-size",
        "256",
        "--max-body",
        "2000000",
        "--read-timeout",
        "2",
    ]);
    let chat = "/v1/chat/completions";
    let cmpl = "/v1/completions";
    let msg = |extra: Value| {
        let mut v = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string().into_bytes()
    };
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let big_stop = json!({"prompt": "Hi", "max_tokens": 2, "stop": ["x".repeat(1 << 20)]});
    let long_prompt = json!({"prompt": "word ".repeat(400), "max_tokens": 2});
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("malformed JSON", post_raw(chat, b"{\"messages\": [")),
        ("empty body", post_raw(chat, b"")),
        ("JSON not an object", post_raw(chat, b"[1, 2, 3]")),
        ("invalid UTF-8", post_raw(chat, b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}")),
        ("deep JSON", post_raw(chat, deep.as_bytes())),
        ("messages missing", post_raw(chat, b"{\"max_tokens\": 2}")),
        ("messages empty", post_raw(chat, &msg(json!({"messages": []})))),
        ("messages of the wrong type", post_raw(chat, &msg(json!({"messages": "hello"})))),
        ("unknown role", post_raw(chat, &msg(json!({"messages": [{"role": "wizard", "content": "x"}]})))),
        ("unknown field", post_raw(chat, &msg(json!({"frobnicate": true})))),
        ("field of the wrong type", post_raw(chat, &msg(json!({"temperature": "hot"})))),
        ("negative max_tokens", post_raw(chat, &msg(json!({"max_tokens": -5})))),
        ("zero max_tokens", post_raw(chat, &msg(json!({"max_tokens": 0})))),
        ("absurd max_tokens", post_raw(chat, &msg(json!({"max_tokens": 1_000_000_000_000i64})))),
        ("temperature out of range", post_raw(chat, &msg(json!({"temperature": 7.5})))),
        ("top_p of zero", post_raw(chat, &msg(json!({"top_p": 0})))),
        ("n of a million", post_raw(chat, &msg(json!({"n": 1_000_000})))),
        ("logit_bias on a bad id", post_raw(chat, &msg(json!({"logit_bias": {"99999999": 1}})))),
        ("logit_bias out of range", post_raw(chat, &msg(json!({"logit_bias": {"5": 1000}})))),
        ("top_logprobs of 100", post_raw(chat, &msg(json!({"logprobs": true, "top_logprobs": 100})))),
        ("a 1 MB stop string", post_raw(cmpl, big_stop.to_string().as_bytes())),
        ("prompt longer than the context", post_raw(cmpl, long_prompt.to_string().as_bytes())),
        ("token id out of the vocabulary", post_raw(cmpl, b"{\"prompt\": [1, 2, 4000000000]}")),
        ("unknown model", post_raw(chat, &msg(json!({"model": "gpt-4o"})))),
        ("a tool without a name", post_raw(chat, &msg(json!({"tools": [{"type": "function"}]})))),
        ("stream_options without stream", post_raw(chat, &msg(json!({"stream_options": {"include_usage": true}})))),
        ("fim on a model without FIM tokens", post_raw("/v1/fim/completions", b"{\"prompt\": \"def f(\", \"suffix\": \")\"}")),
        ("embeddings of nothing", post_raw("/v1/embeddings", b"{\"input\": []}")),
        ("embeddings in an unknown format", post_raw("/v1/embeddings", b"{\"input\": \"x\", \"encoding_format\": \"hex\"}")),
        ("oversized body", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2100000\r\n\r\n".to_vec()),
        ("unknown route", b"GET /v2/everything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("wrong method", b"DELETE /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        ("garbage request line", b"HELLO THERE\r\n\r\n".to_vec()),
        ("huge header", format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000)).into_bytes()),
        ("too many headers", format!("GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..200).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()).into_bytes()),
        ("bad Content-Length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n".to_vec()),
        ("body shorter than Content-Length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"".to_vec()),
    ]
    .into_iter()
    .map(|(name, bytes)| {
        let status = match name {
            "unknown model" | "unknown route" => 404,
            "oversized body" => 413,
            "wrong method" => 405,
            "huge header" | "too many headers" => 431,
            "body shorter than Content-Length" => 408,
            _ => 400,
        };
        (name, bytes, status)
    })
    .collect();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        let got = raw_status(&server, bytes, None);
        let ok = if *name == "body shorter than Content-Length" {
            // The body timeout: the request fails or the connection closes.
            matches!(got, 400 | 408 | 0)
        } else {
            got == *want
        };
        if !ok {
            failures.push(format!("{name}: expected {want}, got {got}"));
        }
    }
    // Slowloris: headers that never end are cut off after --read-timeout.
    let start = Instant::now();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        if s.write_all(b"X-Slow: 1\r\n").is_err() {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let waited = start.elapsed();
    if waited > Duration::from_secs(10) {
        failures.push(format!("slowloris: the connection stayed open {waited:?}"));
    }
    // A connection that never sends anything (or an idle keep-alive one)
    // is closed after --read-timeout too.
    let start = Instant::now();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let waited = start.elapsed();
    if waited > Duration::from_secs(10) {
        failures.push(format!("silent connection: stayed open {waited:?}"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() + 2,
        failures.join("\n")
    );
    eprintln!("{} hostile requests answered as expected", cases.len() + 2);
    // Every JSON error is an OpenAI error object, and the server goes on.
    let (s, v) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [], "max_tokens": 2}),
    );
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, v) = server.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 3}));
    assert_eq!(s, 200, "{v}");
    server.wait_idle();
}

/// Fill-in-the-middle on a random-weight model with Mistral's v3
/// vocabulary: the prompt is mistral-common's layout (its ids are checked
/// in the server crate's unit test; here their count arrives as usage).
#[test]
fn fim_completions_on_a_v3_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v3.gguf");
    let vocab = mistral_test_support::vocab_path("ggml-vocab-mistral-v3.gguf");
    let o = Command::new(BIN)
        .args(["synth", "--preset", "tiny", "--type", "f32", "-o"])
        .arg(&file)
        .arg("--vocab")
        .arg(&vocab)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let server = Server::start_model(&file, &["--alias", "codestral"]);
    let (s, v) = server.get_text("/v1/models");
    assert_eq!(s, 200);
    let models: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(models["data"][0]["id"], "codestral");
    assert_eq!(models["data"][0]["capabilities"]["completion_fim"], true);
    let body = json!({"model": "codestral", "prompt": "def add(a, b):\n    return",
                      "suffix": "\n\nprint(add(1, 2))", "max_tokens": 5, "temperature": 0,
                      "min_tokens": 5});
    let (s, v) = server.post("/v1/fim/completions", &body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["prompt_tokens"], 24);
    // min_tokens holds end-of-generation back: all 5 tokens come.
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let (streamed, _, _) = stream_text(&server, "/v1/fim/completions", body);
    assert_eq!(
        streamed,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
}

/// A request reuses the cached start of an earlier one unless it (or the
/// server) says `cache_prompt: false`: the engine's prompt-token counter
/// shows what ran.
#[test]
fn cache_prompt_reuses_an_earlier_context_unless_turned_off() {
    let server = Server::start(&["--parallel", "1"]);
    let ran = || server.metric("mistral_run_engine_prompt_tokens_total");
    let body = |cache: Option<bool>| {
        let mut b =
            json!({"prompt": "A long, long time ago, in a galaxy far away,", "max_tokens": 2});
        if let Some(c) = cache {
            b["cache_prompt"] = json!(c);
        }
        b
    };
    let (s, v) = server.post("/v1/completions", &body(None));
    assert_eq!(s, 200, "{v}");
    let n = v["usage"]["prompt_tokens"].as_f64().unwrap();
    // The engine's counters update after each step; wait for the last one.
    server.wait_idle();
    let before = ran();
    server.post("/v1/completions", &body(None));
    server.wait_idle();
    let reused = ran() - before;
    assert_eq!(
        reused, 1.0,
        "the repeated prompt should run only its last token"
    );
    let before = ran();
    server.post("/v1/completions", &body(Some(false)));
    server.wait_idle();
    assert_eq!(
        ran() - before,
        n,
        "cache_prompt: false should run the whole prompt"
    );
}
