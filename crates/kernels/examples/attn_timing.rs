//! Fused attention timings (developer tool, like `stream_timing`).
//!
//! Usage: attn_timing [decode|prefill|all] [ISA[,ISA...]] [ROUNDS] [MIB] [SHAPES]
//!
//! Decode: one query token over 512, 2k, 4k and 16k cached keys; prefill:
//! 512 query tokens (`ATTN_Q` sets another count; causal, their own keys
//! cached) at depth 0 and 2k; for the SmolLM2 (9 query heads, 3 KV heads,
//! 64 dims), Mistral 7B (32/8/128) and synth-1b (16/4/128) shapes (SHAPES:
//! `smollm2`, `mistral`, `synth1b`, comma-separated; default the first two;
//! `ATTN_WIN` sets a sliding window) with f16
//! and q8_0 caches in pages of 256 slots. Each case builds copies of its
//! cache totalling MIB MiB (default 1024, so decode reads from memory, not
//! from the last-level cache; 0: one copy), then per round runs each ISA in
//! turn on the default rayon pool for at least 0.2 s, cycling through the
//! copies, and prints the median over the rounds of: microseconds per call,
//! GB/s of cache bytes read (every K and V row the queries see, once) and
//! GFLOP/s (4 · head_dim · n_head per visible query-key pair). With
//! `ATTN_CPU=1` the times are the process's CPU time (all threads) per call
//! instead of wall time: steadier on a shared machine, and the rates are
//! then per busy core.
use mistral_kernels::attention::{attention, AttnSeq, AttnShape, KvPage, KvType};
use mistral_kernels::Isa;
use std::time::{Duration, Instant};

const PAGE: usize = 256;

struct Page {
    k: Vec<u8>,
    v: Vec<u8>,
    pos: Vec<u32>,
}

/// One sequence's cache of `len` keys (positions 0..len) in pages of 256.
fn cache(sh: &AttnShape, len: usize, seed: u32) -> Vec<Page> {
    let d = sh.head_dim;
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    };
    (0..len.div_ceil(PAGE))
        .map(|p| {
            let n = PAGE.min(len - p * PAGE);
            let mut fill = |ty: KvType| {
                let rb = ty.row_bytes(d).expect("row");
                let mut b = vec![0u8; sh.n_head_kv * PAGE * rb];
                let mut row = vec![0f32; d];
                for h in 0..sh.n_head_kv {
                    for i in 0..n {
                        row.iter_mut().for_each(|v| *v = rnd());
                        let at = (h * PAGE + i) * rb;
                        ty.store(&row, &mut b[at..at + rb]).expect("store");
                    }
                }
                b
            };
            Page {
                k: fill(sh.k_type),
                v: fill(sh.v_type),
                pos: (p * PAGE..p * PAGE + n).map(|i| i as u32).collect(),
            }
        })
        .collect()
}

fn views(pages: &[Page]) -> Vec<KvPage<'_>> {
    pages
        .iter()
        .map(|p| KvPage {
            k: &p.k,
            v: &p.v,
            stride: PAGE,
            pos: &p.pos,
        })
        .collect()
}

/// User + system CPU time of the process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &str,
    sh: &AttnShape,
    depth: usize,
    n: usize,
    isas: &[Isa],
    rounds: usize,
    mib: usize,
    pool: &rayon::ThreadPool,
) {
    let len = depth + n;
    let one = cache(sh, len, 1);
    let bytes: usize = one.iter().map(|p| p.k.len() + p.v.len()).sum();
    let copies = ((mib << 20) / bytes).max(1);
    let mut all = vec![one];
    for c in 1..copies {
        // Fresh allocations (a clone of the first copy's bytes).
        all.push(
            all[0]
                .iter()
                .map(|p| Page {
                    k: p.k.clone(),
                    v: p.v.clone(),
                    pos: p.pos.clone(),
                })
                .collect(),
        );
        let _ = c;
    }
    let views: Vec<Vec<KvPage<'_>>> = all.iter().map(|c| views(c)).collect();
    let qpos: Vec<u32> = (depth..len).map(|p| p as u32).collect();
    let width = sh.q_width();
    let q: Vec<f32> = (0..n * width)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut out = vec![0f32; q.len()];
    // Visible (query, key) pairs; bytes: each visible key row of every KV
    // head once.
    let pairs: usize = (0..n).map(|t| depth + t + 1).sum();
    let d = sh.head_dim;
    let flops = 4.0 * pairs as f64 * (d * sh.n_head) as f64;
    let read = (len
        * sh.n_head_kv
        * (sh.k_type.row_bytes(d).expect("row") + sh.v_type.row_bytes(d).expect("row")))
        as f64;
    let mut res: Vec<Vec<f64>> = vec![Vec::new(); isas.len()];
    let mut next = 0;
    let cpu_time = std::env::var("ATTN_CPU").is_ok_and(|v| v == "1");
    for _ in 0..rounds {
        for (&isa, r) in isas.iter().zip(&mut res) {
            let t = Instant::now();
            let c0 = cpu_seconds();
            let mut calls = 0;
            pool.install(|| {
                while calls == 0 || t.elapsed() < Duration::from_millis(200) {
                    let seq = [AttnSeq {
                        row: 0,
                        qpos: &qpos,
                        pages: &views[next % copies],
                    }];
                    attention(isa, sh, &q, &seq, &mut out).expect("attention");
                    next += 1;
                    calls += 1;
                }
            });
            let spent = if cpu_time {
                cpu_seconds() - c0
            } else {
                t.elapsed().as_secs_f64()
            };
            r.push(spent / calls as f64);
        }
    }
    for (isa, r) in isas.iter().zip(res) {
        let s = median(r);
        println!(
            "{name} {:>6} {:>5}x{:<5} {:>5} keys {:>3} q {:<7} {:>9.1} us {:>6.1} GB/s {:>6.1} GFLOP/s ({copies} copies)",
            sh.k_type.name(),
            sh.n_head,
            sh.n_head_kv,
            len,
            n,
            format!("{isa:?}").to_lowercase(),
            s * 1e6,
            read / s / 1e9,
            flops / s / 1e9,
        );
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mode = a.get(1).map(String::as_str).unwrap_or("all");
    let isas: Vec<Isa> = match a.get(2) {
        Some(s) => s
            .split(',')
            .map(|n| Isa::from_name(n).expect("isa"))
            .collect(),
        None => Isa::available_paths()
            .into_iter()
            .filter(|i| *i != Isa::Amx)
            .collect(),
    };
    let num = |i: usize, d: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (rounds, mib) = (num(3, 5).max(1), num(4, 1024));
    let shapes = a.get(5).map(String::as_str).unwrap_or("smollm2,mistral");
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    println!("{} threads", pool.current_num_threads());
    for ty in [KvType::F16, KvType::Q8_0] {
        for (name, nh, nkv, d) in [
            ("smollm2", 9, 3, 64),
            ("mistral", 32, 8, 128),
            ("synth1b", 16, 4, 128),
        ] {
            if !shapes.split(',').any(|s| s == name) {
                continue;
            }
            let sh = AttnShape {
                n_head: nh,
                n_head_kv: nkv,
                head_dim: d,
                k_type: ty,
                v_type: ty,
                scale: 1.0 / (d as f32).sqrt(),
                window: std::env::var("ATTN_WIN").ok().and_then(|v| v.parse().ok()),
            };
            if mode == "decode" || mode == "all" {
                for len in [512, 2048, 4096, 16384] {
                    case("decode ", &sh, len - 1, 1, &isas, rounds, mib, &pool);
                }
            }
            if mode == "prefill" || mode == "all" {
                let q: usize = std::env::var("ATTN_Q")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(512);
                for depth in [0, 2048] {
                    case("prefill", &sh, depth, q, &isas, rounds, mib, &pool);
                }
            }
        }
    }
}
