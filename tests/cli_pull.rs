//! `mistral-run pull` against a local stand-in for the Hugging Face hub: a tiny
//! HTTP server that speaks the `resolve` protocol hf-hub uses (ranged GETs with
//! `etag`, `x-repo-commit` and `content-range` headers). No internet involved.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mistral_gguf::{GgmlType, GgufWriter, Metadata, TensorSpec, Value};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mistral-run"))
}

fn tiny_gguf() -> Vec<u8> {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("general.name", Value::String("stand-in".into()));
    let mut w = GgufWriter::new(md);
    w.add_tensor(TensorSpec::new("token_embd.weight", GgmlType::F32, &[8, 4]));
    let data: Vec<u8> = (0..32u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.to_bytes(&[&data]).unwrap()
}

/// Serves `body` at `/{repo}/resolve/main/{file}`; anything else is a 404.
/// Returns the base URL and a counter of requests served.
fn serve(repo: &'static str, file: &'static str, body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let body = Arc::new(body);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(r) = lower.strip_prefix("range: bytes=") {
                        let (a, b) = r.trim().split_once('-').unwrap();
                        let start: usize = a.parse().unwrap();
                        let end: usize = if b.is_empty() {
                            body.len() - 1
                        } else {
                            b.parse().unwrap()
                        };
                        range = Some((start, end.min(body.len() - 1)));
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                if path != format!("/{repo}/resolve/main/{file}") {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                let (start, end) = range.unwrap_or((0, body.len() - 1));
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n\
                     ETag: \"0123456789abcdef\"\r\nX-Repo-Commit: 0000000000000000000000000000000000000001\r\nConnection: close\r\n\r\n",
                    end + 1 - start,
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[start..=end]);
            });
        }
    });
    (url, hits)
}

#[test]
fn pull_downloads_into_cache_then_reuses_it() {
    let body = tiny_gguf();
    let (url, hits) = serve("org/tiny", "tiny.gguf", body.clone());
    let cache = tempfile::tempdir().unwrap();
    let pull = || {
        Command::new(bin())
            .args(["pull", "--endpoint", &url, "--cache-dir"])
            .arg(cache.path())
            .args(["org/tiny", "tiny.gguf"])
            .env_remove("HF_ENDPOINT")
            .output()
            .unwrap()
    };
    let out = pull();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(path.starts_with(cache.path()));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let served = hits.load(Ordering::SeqCst);
    assert!(
        served >= 2,
        "metadata probe and download expected, saw {served}"
    );

    // Second pull: found in the cache, no request at all.
    let out = pull();
    assert!(out.status.success());
    assert_eq!(hits.load(Ordering::SeqCst), served);

    // The downloaded file is usable by the other commands.
    let info = Command::new(bin())
        .args(["info", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
}

#[test]
fn pull_missing_file_is_one_clear_line() {
    let (url, _) = serve("org/tiny", "tiny.gguf", tiny_gguf());
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["pull", "--endpoint", &url, "--cache-dir"])
        .arg(cache.path())
        .args(["org/tiny", "missing.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing.gguf") && err.contains("404"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn pull_rejects_a_file_that_is_not_gguf() {
    let (url, _) = serve(
        "org/junk",
        "junk.gguf",
        b"this is not a model file at all".to_vec(),
    );
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["pull", "--endpoint", &url, "--cache-dir"])
        .arg(cache.path())
        .args(["org/junk", "junk.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not a GGUF file"), "{err}");
}
