//! Matrix × vector with the weights read from memory, as in a decode step
//! (developer tool, like `mm_timing`; the real numbers come from `cargo bench
//! --bench matvec`). Usage: stream_timing TYPE ROWS COLS [ISA[,ISA...]] [MIB] [ROUNDS]
//!
//! An ISA of `candle` (with the `candle` feature) runs candle's `QMatMul`
//! on the same bytes, called from the main thread as in the criterion
//! bench, so the two alternate within one run.
//!
//! Builds copies of one matrix totalling MIB MiB (default 1024, far above
//! the L3 cache; a small MIB keeps one copy in cache; an ISA of `NAME-plain`
//! keeps the GGUF layout where `NAME` would pack), then per round runs
//! each ISA in turn over every copy four times (and at least 2 GiB) from a
//! pool thread, so the ISAs see the same machine state; prints
//! the median and every round's GiB/s of weights (GGUF bytes) read.
use mistral_kernels::{quantize_to_vec, GgmlType, Isa, QMatrix};
use std::time::Instant;

/// One way to compute the product.
enum Engine {
    Native(Vec<QMatrix>),
    #[cfg(feature = "candle")]
    Candle(Vec<candle_core::quantized::QMatMul>),
}

#[cfg(feature = "candle")]
fn candle_copies(
    ty: GgmlType,
    bytes: &[u8],
    (rows, cols): (usize, usize),
    copies: usize,
) -> Engine {
    use candle_core::quantized::{QMatMul, QStorage, QTensor};
    use candle_core::Device;
    let dtype = mistral_kernels::candle_op::candle_dtype(ty).expect("a type candle supports");
    Engine::Candle(
        (0..copies)
            .map(|_| {
                let data = std::borrow::Cow::Borrowed(bytes);
                let storage = QStorage::from_data(data, &Device::Cpu, dtype).expect("storage");
                let qt = QTensor::new(storage, (rows, cols)).expect("tensor");
                QMatMul::from_qtensor(qt).expect("matmul")
            })
            .collect(),
    )
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let ty = GgmlType::from_name(a.get(1).map(String::as_str).unwrap_or("Q4_K")).expect("type");
    let num = |i: usize, d: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (rows, cols) = (num(2, 4096), num(3, 4096));
    let names: Vec<String> = match a.get(4) {
        Some(s) => s.split(',').map(str::to_string).collect(),
        None => vec![format!("{:?}", Isa::best()).to_lowercase()],
    };
    let (mib, rounds) = (num(5, 1024), num(6, 7).max(1));
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let q = quantize_to_vec(ty, &w).expect("quantize");
    let bytes = q.len();
    let copies = ((mib << 20) / bytes).max(1);
    let engines: Vec<Engine> = names
        .iter()
        .map(|name| {
            #[cfg(feature = "candle")]
            if name == "candle" {
                return candle_copies(ty, &q, (rows, cols), copies);
            }
            // `ISA-plain`: the GGUF layout, never packed.
            let (isa, plain) = match name.strip_suffix("-plain") {
                Some(isa) => (isa, true),
                None => (name.as_str(), false),
            };
            let isa = Isa::from_name(isa).expect("isa");
            Engine::Native(
                (0..copies)
                    .map(|_| {
                        let m = if plain {
                            let shared = std::sync::Arc::new(q.clone());
                            QMatrix::from_shared(ty, rows, cols, shared, 0..bytes)
                        } else {
                            QMatrix::new(ty, rows, cols, q.clone())
                        };
                        m.and_then(|m| m.with_isa(isa)).expect("matrix")
                    })
                    .collect(),
            )
        })
        .collect();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut y = vec![0f32; rows];
    let mut res = vec![Vec::new(); engines.len()];
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    // Every copy four times, and at least 2 GiB read per round.
    let iters = (copies * 4).max((2usize << 30).div_ceil(bytes));
    for _ in 0..rounds {
        for (engine, r) in engines.iter().zip(&mut res) {
            let t = Instant::now();
            match engine {
                Engine::Native(m) => pool.install(|| {
                    for i in 0..iters {
                        m[i % copies].matmul(&x, &mut y).expect("matmul");
                    }
                }),
                #[cfg(feature = "candle")]
                Engine::Candle(m) => {
                    use candle_core::Module;
                    let xt =
                        candle_core::Tensor::from_slice(&x, (1, cols), &candle_core::Device::Cpu)
                            .expect("tensor");
                    for i in 0..iters {
                        std::hint::black_box(m[i % copies].forward(&xt).expect("forward"));
                    }
                }
            }
            let s = t.elapsed().as_secs_f64();
            r.push((bytes * iters) as f64 / s / (1u64 << 30) as f64);
        }
    }
    for (name, mut r) in names.iter().zip(res) {
        r.sort_by(f64::total_cmp);
        let all: Vec<String> = r.iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "{ty} {rows}x{cols} {name}, {copies} copies: median {:.2} GiB/s [{}]",
            r[r.len() / 2],
            all.join(" ")
        );
    }
}
