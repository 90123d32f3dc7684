//! Matrix × matrix at small batches, several instruction-set paths (and,
//! with the `candle` feature, candle's `QMatMul`) alternated round by round
//! in one process, so that they see the same machine state (developer tool,
//! like `stream_timing`; the real numbers come from `cargo bench --bench
//! matvec`). Usage: mm_alternate TYPE ROWS COLS N[,N...] ENGINE[,ENGINE...] [ROUNDS]
//!
//! An ENGINE is an ISA name (`avx2`, `avx512`, ...; `NAME-plain` keeps the
//! GGUF layout where `NAME` would pack) or `candle`. Per batch
//! size `N` and round, each engine repeats the product for at least 30 ms
//! (the native ones from a pool thread, candle from the main thread as in
//! the criterion bench); prints the median GFLOP/s (2·ROWS·COLS·N per
//! second) of each.
use mistral_kernels::{quantize_to_vec, GgmlType, Isa, QMatrix};
use std::time::Instant;

/// One way to compute the product.
enum Engine {
    Native(QMatrix),
    #[cfg(feature = "candle")]
    Candle(candle_core::quantized::QMatMul),
}

fn engine(name: &str, ty: GgmlType, bytes: &[u8], (rows, cols): (usize, usize)) -> Engine {
    #[cfg(feature = "candle")]
    if name == "candle" {
        use candle_core::quantized::{QMatMul, QStorage, QTensor};
        let dtype = mistral_kernels::candle_op::candle_dtype(ty).expect("a type candle supports");
        let data = std::borrow::Cow::Borrowed(bytes);
        let storage = QStorage::from_data(data, &candle_core::Device::Cpu, dtype).expect("storage");
        let qt = QTensor::new(storage, (rows, cols)).expect("tensor");
        return Engine::Candle(QMatMul::from_qtensor(qt).expect("matmul"));
    }
    // `ISA-plain`: the GGUF layout, never packed.
    let (isa, plain) = match name.strip_suffix("-plain") {
        Some(isa) => (isa, true),
        None => (name, false),
    };
    let isa = Isa::from_name(isa).expect("an ISA name (or candle, with the candle feature)");
    let m = if plain {
        let len = bytes.len();
        QMatrix::from_shared(ty, rows, cols, std::sync::Arc::new(bytes.to_vec()), 0..len)
    } else {
        QMatrix::new(ty, rows, cols, bytes.to_vec())
    };
    Engine::Native(m.and_then(|m| m.with_isa(isa)).expect("matrix"))
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_string());
    let ty = GgmlType::from_name(&arg(1, "Q6_K")).expect("type");
    let (rows, cols): (usize, usize) = (
        arg(2, "4096").parse().expect("rows"),
        arg(3, "4096").parse().expect("cols"),
    );
    let ns: Vec<usize> = arg(4, "1,4,8,16")
        .split(',')
        .map(|s| s.parse().expect("batch size"))
        .collect();
    let names: Vec<String> = arg(5, "avx2,avx512")
        .split(',')
        .map(str::to_string)
        .collect();
    let rounds: usize = arg(6, "9").parse::<usize>().expect("rounds").max(1);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let q = quantize_to_vec(ty, &w).expect("quantize");
    let engines: Vec<Engine> = names
        .iter()
        .map(|n| engine(n, ty, &q, (rows, cols)))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    for &n in &ns {
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut y = vec![0f32; n * rows];
        let mut res = vec![Vec::new(); engines.len()];
        let flop = 2.0 * (rows * cols * n) as f64;
        for _ in 0..rounds {
            for (e, r) in engines.iter().zip(&mut res) {
                let t = Instant::now();
                let mut k = 0;
                match e {
                    Engine::Native(m) => pool.install(|| {
                        while k < 3 || t.elapsed().as_secs_f64() < 0.03 {
                            m.matmul(&x, &mut y).expect("matmul");
                            k += 1;
                        }
                    }),
                    #[cfg(feature = "candle")]
                    Engine::Candle(m) => {
                        use candle_core::Module;
                        let xt = candle_core::Tensor::from_slice(
                            &x,
                            (n, cols),
                            &candle_core::Device::Cpu,
                        )
                        .expect("tensor");
                        while k < 3 || t.elapsed().as_secs_f64() < 0.03 {
                            std::hint::black_box(m.forward(&xt).expect("forward"));
                            k += 1;
                        }
                    }
                }
                r.push(flop * k as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
        }
        let meds: Vec<String> = res
            .iter_mut()
            .zip(&names)
            .map(|(r, name)| {
                r.sort_by(f64::total_cmp);
                format!("{name} {:.0}", r[r.len() / 2])
            })
            .collect();
        println!(
            "{ty} {rows}x{cols} n={n}, GFLOP/s (median of {rounds}): {}",
            meds.join(" | ")
        );
    }
}
