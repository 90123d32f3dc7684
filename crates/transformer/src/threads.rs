//! Thread settings of the CPU engine that candle reads from the environment.

/// Spins of candle's CPU barrier pool (the workers of its element-wise ops)
/// after each op before they park. candle 0.11 spins 25,000 times; the model
/// runs our kernels on every thread between candle's ops, and a worker still
/// spinning took a core from them: SmolLM2 Q4_K_M prefill (pp128, 2 threads,
/// AMD Zen 4) read 562–638 tok/s with candle's limit and 674–877 with this
/// one in the same rounds, decode within noise (BENCHMARKS.md, 2026-12-04
/// evening).
pub const CANDLE_SPIN_LIMIT: u32 = 1000;

/// Sets `CANDLE_BARRIER_POOL_SPIN_LIMIT` to [`CANDLE_SPIN_LIMIT`] unless it
/// is already set (a value the user chose wins). candle reads it once, when
/// its pool starts; call this at the start of `main`, before any other
/// thread exists (the environment is not safe to write while other threads
/// read it). The `mistral-run` CLI does.
pub fn limit_candle_spinning() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, CANDLE_SPIN_LIMIT.to_string());
    }
}
