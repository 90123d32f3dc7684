//! Helpers shared by the workspace's tests: the repository root and the real
//! test model, fetched once per test process by `models/fetch-smollm2.sh`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (where `Cargo.toml`, `models/` and `tests/` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Path of SmolLM2-135M-Instruct Q4_1, fetched into the cache on first use.
/// Panics (failing the test) with the script's stderr if it cannot be fetched.
pub fn smollm2_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("models/fetch-smollm2.sh"))
            .output()
            .expect("run models/fetch-smollm2.sh");
        assert!(
            out.status.success(),
            "fetch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}
