//! `attention::attention` against a naive attention in plain loops (f64
//! sums, the full softmax over the visible keys, keys and values read through
//! `KvType::load`), on every instruction-set path this CPU runs; the bits of
//! a sequence alone vs in a batch and across thread counts; `KvType` rows;
//! and the shape errors.

mod common;

use common::{gaussian, on_threads};
use mistral_kernels::attention::{attention, AttnSeq, AttnShape, KvPage, KvType};
use mistral_kernels::{dequantize, quantize_to_vec, GgmlType, Isa, KernelError};

/// Largest error allowed, as a fraction of the largest |value| the query
/// sees. Measured worst over the cases below: 1.7e-6 (scalar path, odd
/// pages; its dot products are one f32 chain), 9.7e-7 on the AVX2 and
/// AVX-512 paths; margin ×3.
const TOL: f64 = 5e-6;

/// The same for sharper softmaxes (queries ×8, scores spread over about
/// ±30 where most cases have ±4): measured worst 2.8e-6 (every path);
/// margin ×3.6.
const TOL_SHARP: f64 = 1e-5;

/// A page as the cache owns it.
struct Page {
    k: Vec<u8>,
    v: Vec<u8>,
    stride: usize,
    pos: Vec<u32>,
}

/// A sequence of a test batch.
struct Seq {
    row: usize,
    qpos: Vec<u32>,
    pages: Vec<Page>,
}

/// Bytes that decode to NaN in every type (f32 and f16 all-ones; a Q8_0
/// block whose scale is an f16 NaN), for the slots no one may read.
const POISON: u8 = 0xff;

fn shape(n_head: usize, n_head_kv: usize, head_dim: usize, k: KvType, v: KvType) -> AttnShape {
    AttnShape {
        n_head,
        n_head_kv,
        head_dim,
        k_type: k,
        v_type: v,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window: None,
    }
}

impl Page {
    /// A page of `stride` slots holding `pos.len()` random rows per KV head
    /// (the other slots poisoned).
    fn new(sh: &AttnShape, stride: usize, pos: &[u32], seed: u64) -> Page {
        let (d, nkv) = (sh.head_dim, sh.n_head_kv);
        let fill = |ty: KvType, seed: u64| {
            let rb = ty.row_bytes(d).unwrap();
            let mut bytes = vec![POISON; nkv * stride * rb];
            let vals = gaussian(nkv * pos.len() * d, seed);
            for h in 0..nkv {
                for i in 0..pos.len() {
                    let src = &vals[(h * pos.len() + i) * d..][..d];
                    let at = (h * stride + i) * rb;
                    ty.store(src, &mut bytes[at..at + rb]).unwrap();
                }
            }
            bytes
        };
        Page {
            k: fill(sh.k_type, seed),
            v: fill(sh.v_type, seed ^ 0x5555),
            stride,
            pos: pos.to_vec(),
        }
    }
}

/// Cuts `pos` (slot order) into pages: page `i` takes `fill[i % n]` slots
/// in a layout of `fill + extra[i % n]` slots (the last page takes what is
/// left).
fn pages(sh: &AttnShape, pos: &[u32], fill: &[usize], extra: &[usize], seed: u64) -> Vec<Page> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < pos.len() {
        let n = fill[i % fill.len()].min(pos.len() - at);
        let stride = fill[i % fill.len()] + extra[i % extra.len()];
        out.push(Page::new(sh, stride, &pos[at..at + n], seed + i as u64));
        at += n;
        i += 1;
    }
    out
}

/// Pages of 256 slots holding positions `0..len`.
fn linear(sh: &AttnShape, len: u32, seed: u64) -> Vec<Page> {
    let pos: Vec<u32> = (0..len).collect();
    pages(sh, &pos, &[256], &[0], seed)
}

fn views(seqs: &[Seq]) -> Vec<Vec<KvPage<'_>>> {
    seqs.iter()
        .map(|s| {
            s.pages
                .iter()
                .map(|p| KvPage {
                    k: &p.k,
                    v: &p.v,
                    stride: p.stride,
                    pos: &p.pos,
                })
                .collect()
        })
        .collect()
}

/// Runs `attention` on `isa` over `out` (which keeps what it holds where no
/// sequence writes).
fn run(isa: Isa, sh: &AttnShape, q: &[f32], seqs: &[Seq], out: &mut [f32]) {
    let views = views(seqs);
    let batch: Vec<AttnSeq<'_>> = seqs
        .iter()
        .zip(&views)
        .map(|(s, pages)| AttnSeq {
            row: s.row,
            qpos: &s.qpos,
            pages,
        })
        .collect();
    attention(isa, sh, q, &batch, out).unwrap();
}

/// A decoded cache row: position, key, value.
type Row = (u32, Vec<f32>, Vec<f32>);

/// The naive attention of one sequence: `[token][head][dim]` in f64, and per
/// (token, head) the largest |value| it sees (0: it sees no key).
fn reference(sh: &AttnShape, q: &[f32], s: &Seq) -> (Vec<f64>, Vec<f64>) {
    let (d, g, nh) = (sh.head_dim, sh.group(), sh.n_head);
    let width = nh * d;
    // Every valid row decoded once: (position, k, v) per KV head.
    let mut rows: Vec<Vec<Row>> = vec![Vec::new(); sh.n_head_kv];
    for p in &s.pages {
        let (kb, vb) = (
            sh.k_type.row_bytes(d).unwrap(),
            sh.v_type.row_bytes(d).unwrap(),
        );
        for (h, rows) in rows.iter_mut().enumerate() {
            for (i, &kp) in p.pos.iter().enumerate() {
                let (mut k, mut v) = (vec![0f32; d], vec![0f32; d]);
                let at = h * p.stride + i;
                sh.k_type
                    .load(&p.k[at * kb..(at + 1) * kb], &mut k)
                    .unwrap();
                sh.v_type
                    .load(&p.v[at * vb..(at + 1) * vb], &mut v)
                    .unwrap();
                rows.push((kp, k, v));
            }
        }
    }
    let mut out = vec![0f64; s.qpos.len() * width];
    let mut mag = vec![0f64; s.qpos.len() * nh];
    for (t, &qp) in s.qpos.iter().enumerate() {
        for h in 0..nh {
            let qr = &q[(s.row + t) * width + h * d..][..d];
            let seen: Vec<&Row> = rows[h / g]
                .iter()
                .filter(|(kp, _, _)| sh.visible(qp, *kp))
                .collect();
            if seen.is_empty() {
                continue;
            }
            let scores: Vec<f64> = seen
                .iter()
                .map(|(_, k, _)| {
                    sh.scale as f64
                        * qr.iter()
                            .zip(k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = w.iter().sum();
            let o = &mut out[(t * nh + h) * d..][..d];
            for (p, (_, _, v)) in w.iter().zip(&seen) {
                for (o, x) in o.iter_mut().zip(v) {
                    *o += p / sum * *x as f64;
                }
            }
            mag[t * nh + h] = seen
                .iter()
                .flat_map(|(_, _, v)| v.iter())
                .fold(0f64, |m, x| m.max(x.abs() as f64));
        }
    }
    (out, mag)
}

/// Query rows for `tokens` tokens, times `sharp`.
fn queries(sh: &AttnShape, tokens: usize, sharp: f32, seed: u64) -> Vec<f32> {
    gaussian(tokens * sh.q_width(), seed)
        .into_iter()
        .map(|x| x * sharp)
        .collect()
}

/// Worst error per path of a test family.
#[derive(Default)]
struct Worst(Vec<(Isa, f64)>);

impl Worst {
    fn add(&mut self, isa: Isa, e: f64) {
        match self.0.iter_mut().find(|(i, _)| *i == isa) {
            Some((_, w)) => *w = w.max(e),
            None => self.0.push((isa, e)),
        }
    }

    /// Prints the family's worst errors (seen with `--nocapture`).
    fn report(&self, what: &str) {
        let all: Vec<String> = self
            .0
            .iter()
            .map(|(i, e)| format!("{i:?} {e:.2e}"))
            .collect();
        eprintln!("{what}: worst error {}", all.join(", "));
    }
}

/// Checks every sequence of the batch on every path against the reference;
/// rows no sequence owns must keep their contents. Adds each path's worst
/// error to `worst`.
fn check_batch(what: &str, sh: &AttnShape, q: &[f32], seqs: &[Seq], tol: f64, worst: &mut Worst) {
    let cov = common::Coverage::new("attention::check_batch");
    let width = sh.q_width();
    let tokens = q.len() / width;
    let refs: Vec<_> = seqs.iter().map(|s| reference(sh, q, s)).collect();
    let mut owned = vec![false; tokens];
    for s in seqs {
        owned[s.row..s.row + s.qpos.len()].fill(true);
    }
    let sentinel = f32::from_bits(0x7fc0_1234);
    for isa in cov.all() {
        let mut out = vec![sentinel; q.len()];
        run(isa, sh, q, seqs, &mut out);
        for (t, own) in owned.iter().enumerate() {
            if !own {
                assert!(
                    out[t * width..(t + 1) * width]
                        .iter()
                        .all(|x| x.to_bits() == sentinel.to_bits()),
                    "{what} {isa:?}: row {t} belongs to no sequence but was written"
                );
            }
        }
        for (si, (s, (want, mag))) in seqs.iter().zip(&refs).enumerate() {
            for t in 0..s.qpos.len() {
                for h in 0..sh.n_head {
                    let m = mag[t * sh.n_head + h];
                    let d = sh.head_dim;
                    let got = &out[(s.row + t) * width + h * d..][..d];
                    let want = &want[(t * sh.n_head + h) * d..][..d];
                    for (x, (g, w)) in got.iter().zip(want).enumerate() {
                        if m == 0.0 {
                            assert!(
                                g.to_bits() == 0,
                                "{what} {isa:?} seq {si} token {t} head {h} dim {x}: sees no key, got {g}"
                            );
                            continue;
                        }
                        let e = (*g as f64 - w).abs() / m;
                        assert!(
                            e <= tol,
                            "{what} {isa:?} seq {si} token {t} (pos {}) head {h} dim {x}: {g} vs {w} (error {e:.3e} of {m})",
                            s.qpos[t]
                        );
                        worst.add(isa, e);
                    }
                }
            }
        }
    }
}

/// Whether to run case `i` of a family: every case, except on AArch64,
/// where `tests/aarch64.sh` runs the tests under qemu (some 30 times slower)
/// and every third case is taken (the vector kernel is the same generic code
/// as on x86-64; the cases kept still reach every NEON primitive: each cache
/// type, both layouts, masks and windows).
fn keep_case(i: usize) -> bool {
    !cfg!(target_arch = "aarch64") || i.is_multiple_of(3)
}

/// One sequence at row 0 with queries at `qpos` over `pages`.
fn single(qpos: Vec<u32>, pages: Vec<Page>) -> Vec<Seq> {
    vec![Seq {
        row: 0,
        qpos,
        pages,
    }]
}

/// Head shapes: GQA ratios 1, 4 and 8, odd head counts, head sizes 32 to
/// 128.
const HEADS: [(usize, usize, usize); 7] = [
    (4, 4, 64),
    (8, 2, 128),
    (8, 1, 64),
    (3, 1, 64),
    (9, 3, 64),
    (4, 1, 32),
    (6, 2, 96),
];

/// Key and value types: each type for both, and mixed pairs.
const TYPES: [(KvType, KvType); 5] = [
    (KvType::F16, KvType::F16),
    (KvType::Q8_0, KvType::Q8_0),
    (KvType::F32, KvType::F32),
    (KvType::Q8_0, KvType::F16),
    (KvType::F16, KvType::F32),
];

#[test]
fn decode_matches_reference() {
    let mut worst = Worst::default();
    for (i, &(nh, nkv, d)) in HEADS.iter().enumerate() {
        for (j, &(kt, vt)) in TYPES.iter().enumerate() {
            let sh = shape(nh, nkv, d, kt, vt);
            for (l, len) in [1u32, 7, 255, 257, 1000, 1500].into_iter().enumerate() {
                // Only some combinations (each head shape, type and length
                // appears several times).
                if (i + j + l) % 3 != 0 || !keep_case(i + l) {
                    continue;
                }
                let seed = (i * 100 + j * 10 + l) as u64;
                let seqs = single(vec![len - 1], linear(&sh, len, seed));
                let q = queries(&sh, 1, 1.0, seed + 7);
                let what = format!("decode {nh}/{nkv}x{d} {kt:?}/{vt:?} len {len}");
                check_batch(&what, &sh, &q, &seqs, TOL, &mut worst);
            }
        }
    }
    worst.report("decode");
}

#[test]
fn prefill_matches_reference() {
    let mut worst = Worst::default();
    for (i, &(nh, nkv, d)) in HEADS.iter().enumerate() {
        for (j, &(kt, vt)) in TYPES.iter().enumerate() {
            if (i + j) % 2 != 0 {
                continue;
            }
            let sh = shape(nh, nkv, d, kt, vt);
            for (c, (n, depth)) in [(37u32, 0u32), (100, 0), (37, 1000), (5, 300)]
                .into_iter()
                .enumerate()
            {
                if !keep_case(i + c) {
                    continue;
                }
                // The queries' own keys are in the cache (causal within the
                // batch).
                let len = depth + n;
                let seed = (i * 100 + j * 10) as u64 + n as u64;
                let seqs = single((depth..len).collect(), linear(&sh, len, seed));
                let q = queries(&sh, n as usize, 1.0, seed + 1);
                let what = format!("prefill {nh}/{nkv}x{d} {kt:?}/{vt:?} {n} at {depth}");
                check_batch(&what, &sh, &q, &seqs, TOL, &mut worst);
            }
        }
    }
    worst.report("prefill");
}

#[test]
fn sharp_softmax_matches_reference() {
    let mut worst = Worst::default();
    for (i, &(nh, nkv, d)) in [(8, 2, 128), (9, 3, 64)].iter().enumerate() {
        let sh = shape(nh, nkv, d, KvType::F16, KvType::F16);
        for (n, depth) in [(1u32, 700u32), (70, 200)] {
            let len = depth + n;
            let seed = 900 + i as u64 + n as u64;
            let seqs = single((depth..len).collect(), linear(&sh, len, seed));
            let q = queries(&sh, n as usize, 8.0, seed + 1);
            let what = format!("sharp {nh}/{nkv}x{d} {n} at {depth}");
            check_batch(&what, &sh, &q, &seqs, TOL_SHARP, &mut worst);
        }
    }
    worst.report("sharp softmax");
}

#[test]
fn sliding_window_matches_reference() {
    let mut worst = Worst::default();
    for (i, &(nh, nkv, d)) in HEADS.iter().enumerate() {
        let (kt, vt) = TYPES[i % TYPES.len()];
        for w in [1u32, 5, 64, 300] {
            let mut sh = shape(nh, nkv, d, kt, vt);
            sh.window = Some(w);
            for (c, (n, depth)) in [(1u32, 1000u32), (100, 0), (37, 400)]
                .into_iter()
                .enumerate()
            {
                if !keep_case(i + w as usize + c) {
                    continue;
                }
                let len = depth + n;
                let seed = 300 + (i * 10) as u64 + w as u64 + n as u64;
                let seqs = single((depth..len).collect(), linear(&sh, len, seed));
                let q = queries(&sh, n as usize, 1.0, seed + 1);
                let what = format!("window {w} {nh}/{nkv}x{d} {kt:?}/{vt:?} {n} at {depth}");
                check_batch(&what, &sh, &q, &seqs, TOL, &mut worst);
            }
        }
    }
    worst.report("sliding window");
}

#[test]
fn rolling_cache_matches_reference() {
    // A ring of `cap` slots: slot = pos % cap, so positions wrap within the
    // pages (not in slot order).
    let mut worst = Worst::default();
    for (i, &(nh, nkv, d)) in [(8, 2, 128), (9, 3, 64), (4, 4, 32)].iter().enumerate() {
        for (j, &(kt, vt)) in TYPES[..3].iter().enumerate() {
            for (c, (cap, end, n, w)) in [
                (300u32, 1000u32, 1u32, Some(300u32)),
                (300, 1000, 40, Some(261)),
                (256, 700, 1, None),
                (513, 2000, 64, Some(450)),
            ]
            .into_iter()
            .enumerate()
            {
                if !keep_case(i + j + c) {
                    continue;
                }
                let mut sh = shape(nh, nkv, d, kt, vt);
                sh.window = w;
                let mut pos = vec![0u32; cap as usize];
                for p in end.saturating_sub(cap)..end {
                    pos[(p % cap) as usize] = p;
                }
                let seed = 500 + i as u64 + cap as u64;
                let seqs = single(
                    (end - n..end).collect(),
                    pages(&sh, &pos, &[128, 200], &[0, 56], seed),
                );
                let q = queries(&sh, n as usize, 1.0, seed + 1);
                let what = format!("rolling {nh}/{nkv}x{d} {kt:?}/{vt:?} cap {cap} {n} at {end}");
                check_batch(&what, &sh, &q, &seqs, TOL, &mut worst);
            }
        }
    }
    worst.report("rolling cache");
}

#[test]
fn odd_pages_match_reference() {
    // Pages of odd fills and strides (some with spare slots), one empty page.
    let mut worst = Worst::default();
    for (i, &(nh, nkv, d)) in [(8, 2, 128), (3, 1, 64), (6, 2, 96)].iter().enumerate() {
        for (j, &(kt, vt)) in TYPES.iter().enumerate() {
            let sh = shape(nh, nkv, d, kt, vt);
            for (c, (len, n)) in [(1001u32, 1u32), (1001, 23), (70, 70)]
                .into_iter()
                .enumerate()
            {
                if !keep_case(i + j + c) {
                    continue;
                }
                let pos: Vec<u32> = (0..len).collect();
                let seed = 700 + i as u64 + len as u64 + n as u64;
                let mut pg = pages(&sh, &pos, &[1, 63, 255, 17, 300], &[0, 1, 3, 0, 100], seed);
                pg.insert(2, Page::new(&sh, 8, &[], seed + 99));
                let seqs = single((len - n..len).collect(), pg);
                let q = queries(&sh, n as usize, 1.0, seed + 1);
                let what = format!("pages {nh}/{nkv}x{d} {kt:?}/{vt:?} {n} of {len}");
                check_batch(&what, &sh, &q, &seqs, TOL, &mut worst);
            }
        }
    }
    worst.report("odd pages");
}

/// A batch of decoding and prefilling sequences, some rows owned by none,
/// one query that sees no key, one sequence with no pages and one with no
/// queries.
fn mixed_batch(sh: &AttnShape, seed: u64) -> (Vec<f32>, Vec<Seq>) {
    let mut seqs = Vec::new();
    let mut row = 1; // row 0 is owned by no sequence
    let mut add = |qpos: Vec<u32>, pages: Vec<Page>, gap: usize| {
        let n = qpos.len();
        seqs.push(Seq { row, qpos, pages });
        row += n + gap;
    };
    add(vec![2047], linear(sh, 2048, seed), 0);
    add((300..360).collect(), linear(sh, 360, seed + 1), 2);
    add(vec![5], linear(sh, 6, seed + 2), 0);
    // Sees no key: every cached position is after it.
    let late: Vec<u32> = (100..140).collect();
    add(vec![50], pages(sh, &late, &[256], &[0], seed + 3), 0);
    add(vec![9, 10], Vec::new(), 1);
    add(Vec::new(), linear(sh, 10, seed + 4), 0);
    add((0..37).collect(), linear(sh, 37, seed + 5), 0);
    let q = queries(sh, row, 1.0, seed + 6);
    (q, seqs)
}

#[test]
fn batch_matches_reference() {
    let mut worst = Worst::default();
    for &(nh, nkv, d) in &[(8, 2, 128), (9, 3, 64)] {
        for (j, &(kt, vt)) in TYPES[..3].iter().enumerate() {
            for (c, window) in [None, Some(40)].into_iter().enumerate() {
                if !keep_case(j + c) {
                    continue;
                }
                let mut sh = shape(nh, nkv, d, kt, vt);
                sh.window = window;
                let (q, seqs) = mixed_batch(&sh, 40 + nh as u64);
                let what = format!("batch {nh}/{nkv}x{d} {kt:?}/{vt:?} window {window:?}");
                check_batch(&what, &sh, &q, &seqs, TOL, &mut worst);
            }
        }
    }
    worst.report("batch");
}

#[test]
fn no_visible_key_gives_zeros() {
    let cov = common::Coverage::new("attention::no_visible_key_gives_zeros");
    let sh = shape(8, 2, 64, KvType::F16, KvType::F16);
    let late: Vec<u32> = (10..300).collect();
    let mut seqs = single(vec![3, 9, 10], pages(&sh, &late, &[128], &[0], 1));
    seqs.push(Seq {
        row: 3,
        qpos: vec![1000],
        pages: Vec::new(),
    });
    let q = queries(&sh, 4, 1.0, 2);
    for isa in cov.all() {
        let mut out = vec![f32::NAN; q.len()];
        run(isa, &sh, &q, &seqs, &mut out);
        let w = sh.q_width();
        assert!(out[..2 * w].iter().all(|x| x.to_bits() == 0), "{isa:?}");
        assert!(out[2 * w..3 * w]
            .iter()
            .all(|x| x.is_finite() && x.to_bits() != 0));
        assert!(out[3 * w..].iter().all(|x| x.to_bits() == 0), "{isa:?}");
    }
    // A window that excludes every cached key.
    let mut sh = sh;
    sh.window = Some(3);
    let seqs = single(vec![500], linear(&sh, 400, 3));
    let q = queries(&sh, 1, 1.0, 4);
    for isa in cov.all() {
        let mut out = vec![f32::NAN; q.len()];
        run(isa, &sh, &q, &seqs, &mut out);
        assert!(out.iter().all(|x| x.to_bits() == 0), "{isa:?}");
    }
}

/// The output rows of sequence `i` of a batch.
fn rows_of(sh: &AttnShape, out: &[f32], s: &Seq) -> Vec<u32> {
    let w = sh.q_width();
    out[s.row * w..(s.row + s.qpos.len()) * w]
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn bits_independent_of_batch_and_threads() {
    let cov = common::Coverage::new("attention::bits_independent_of_batch_and_threads");
    for &(nh, nkv, d) in &[(8, 2, 128), (9, 3, 64)] {
        let sh = shape(nh, nkv, d, KvType::F16, KvType::Q8_0);
        let (q, batch) = mixed_batch(&sh, 77);
        let w = sh.q_width();
        for isa in cov.all() {
            // Every sequence with queries, alone at row 0 on 1 thread.
            let alone: Vec<Option<Vec<u32>>> = batch
                .iter()
                .map(|s| {
                    let n = s.qpos.len();
                    (n > 0).then(|| {
                        let q1 = q[s.row * w..(s.row + n) * w].to_vec();
                        let one = [Seq {
                            row: 0,
                            qpos: s.qpos.clone(),
                            pages: s.pages.iter().map(copy_page).collect(),
                        }];
                        let mut out = vec![0f32; q1.len()];
                        on_threads(1, || run(isa, &sh, &q1, &one, &mut out));
                        rows_of(&sh, &out, &one[0])
                    })
                })
                .collect();
            for threads in [1, 2, 3] {
                let mut out = vec![0f32; q.len()];
                on_threads(threads, || run(isa, &sh, &q, &batch, &mut out));
                for (i, (s, a)) in batch.iter().zip(&alone).enumerate() {
                    if let Some(a) = a {
                        assert!(
                            rows_of(&sh, &out, s) == *a,
                            "{isa:?} {nh}/{nkv}x{d}: sequence {i} in a batch on {threads} threads \
                             differs from alone on 1"
                        );
                    }
                }
            }
        }
    }
}

fn copy_page(p: &Page) -> Page {
    Page {
        k: p.k.clone(),
        v: p.v.clone(),
        stride: p.stride,
        pos: p.pos.clone(),
    }
}

#[test]
fn kv_rows_round_trip() {
    for d in [32, 64, 96, 128] {
        let x = gaussian(d, d as u64);
        // f32: exact.
        let mut b = vec![0u8; KvType::F32.row_bytes(d).unwrap()];
        KvType::F32.store(&x, &mut b).unwrap();
        let mut y = vec![0f32; d];
        KvType::F32.load(&b, &mut y).unwrap();
        assert_eq!(x, y);
        // f16: exact for values f16 holds.
        let h: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let mut b = vec![0u8; KvType::F16.row_bytes(d).unwrap()];
        KvType::F16.store(&h, &mut b).unwrap();
        KvType::F16.load(&b, &mut y).unwrap();
        assert_eq!(h, y);
        // q8_0: the crate's reference quantizer, then its dequantization.
        let mut b = vec![0u8; KvType::Q8_0.row_bytes(d).unwrap()];
        KvType::Q8_0.store(&x, &mut b).unwrap();
        let q = quantize_to_vec(GgmlType::Q8_0, &x).unwrap();
        assert_eq!(b, q);
        KvType::Q8_0.load(&b, &mut y).unwrap();
        let mut want = vec![0f32; d];
        dequantize(GgmlType::Q8_0, &q, &mut want).unwrap();
        assert_eq!(y, want);
    }
    // f16 of any value: rounded to nearest even as `f16::from_f32`, value
    // by value (the store converts in chunks of 64: a row of 200 ends in a
    // partial one).
    let x: Vec<f32> = gaussian(200, 7).iter().map(|v| v * 1000.0).collect();
    let mut b = vec![0u8; KvType::F16.row_bytes(200).unwrap()];
    KvType::F16.store(&x, &mut b).unwrap();
    let want: Vec<u8> = x
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    assert_eq!(b, want);
    assert_eq!(KvType::Q8_0.row_bytes(48), None);
    assert_eq!(KvType::Q8_0.row_bytes(64), Some(68));
    let mut y = vec![0f32; 4];
    assert!(matches!(
        KvType::F16.load(&[0u8; 6], &mut y),
        Err(KernelError::Shape { .. })
    ));
    assert!(matches!(
        KvType::F32.store(&y, &mut [0u8; 15]),
        Err(KernelError::Shape { .. })
    ));
    for t in KvType::ALL {
        assert_eq!(KvType::from_name(&t.name().to_uppercase()), Some(t));
    }
}

#[test]
fn shape_errors_are_errors() {
    let sh = shape(8, 2, 64, KvType::F16, KvType::F16);
    let w = sh.q_width();
    let q = vec![0f32; 4 * w];
    let page = Page::new(&sh, 16, &(0..10).collect::<Vec<_>>(), 1);
    let good = KvPage {
        k: &page.k,
        v: &page.v,
        stride: 16,
        pos: &page.pos,
    };
    let qpos = [10u32, 11];
    let call = |sh: &AttnShape, q: &[f32], seqs: &[AttnSeq<'_>], n: usize| {
        let mut out = vec![0f32; n];
        attention(Isa::Scalar, sh, q, seqs, &mut out)
    };
    let one = |row: usize, p: KvPage<'_>, f: &dyn Fn(&[AttnSeq<'_>]) -> bool| {
        let pages = [p];
        let s = [AttnSeq {
            row,
            qpos: &qpos,
            pages: &pages,
        }];
        f(&s)
    };
    let is_shape = |r: mistral_kernels::Result<()>| matches!(r, Err(KernelError::Shape { .. }));
    // The good call works.
    assert!(one(0, good, &|s| call(&sh, &q, s, q.len()).is_ok()));
    // Bad strides: more slots than the stride, or pages too short for it.
    let mut p = good;
    p.stride = 9;
    assert!(one(0, p, &|s| is_shape(call(&sh, &q, s, q.len()))));
    let mut p = good;
    p.stride = 17;
    assert!(one(0, p, &|s| is_shape(call(&sh, &q, s, q.len()))));
    let mut p = good;
    p.v = &page.v[1..];
    assert!(one(0, p, &|s| is_shape(call(&sh, &q, s, q.len()))));
    let mut p = good;
    p.stride = usize::MAX / 2;
    assert!(one(0, p, &|s| is_shape(call(&sh, &q, s, q.len()))));
    // Rows past the end (and a row index that would overflow).
    assert!(one(3, good, &|s| is_shape(call(&sh, &q, s, q.len()))));
    assert!(one(usize::MAX, good, &|s| is_shape(call(
        &sh,
        &q,
        s,
        q.len()
    ))));
    // Overlapping sequences.
    {
        let pages = [good];
        let s = [
            AttnSeq {
                row: 0,
                qpos: &qpos,
                pages: &pages,
            },
            AttnSeq {
                row: 1,
                qpos: &qpos,
                pages: &pages,
            },
        ];
        assert!(is_shape(call(&sh, &q, &s, q.len())));
    }
    // q and out of different or ragged lengths.
    assert!(one(0, good, &|s| is_shape(call(&sh, &q, s, q.len() - 1))));
    assert!(one(0, good, &|s| is_shape(call(
        &sh,
        &q[..w + 1],
        s,
        w + 1
    ))));
    // Window 0, head counts that do not divide, no heads, no dimensions,
    // a non-finite scale.
    let bad_shapes = [
        AttnShape {
            window: Some(0),
            ..sh
        },
        AttnShape { n_head: 7, ..sh },
        AttnShape { n_head_kv: 0, ..sh },
        AttnShape { n_head: 0, ..sh },
        AttnShape { head_dim: 0, ..sh },
        AttnShape {
            scale: f32::NAN,
            ..sh
        },
        AttnShape {
            n_head: usize::MAX / 2 + 1,
            n_head_kv: 1,
            ..sh
        },
    ];
    for b in bad_shapes {
        assert!(
            one(0, good, &|s| is_shape(call(&b, &q, s, q.len()))),
            "{b:?}"
        );
    }
    // q8_0 rows of a head size that is not a multiple of 32 (keys or values).
    for (k, v) in [(KvType::Q8_0, KvType::F16), (KvType::F16, KvType::Q8_0)] {
        let b = AttnShape {
            head_dim: 48,
            k_type: k,
            v_type: v,
            ..sh
        };
        let q = vec![0f32; 2 * b.q_width()];
        let s = [AttnSeq {
            row: 0,
            qpos: &qpos,
            pages: &[],
        }];
        assert!(is_shape(call(&b, &q, &s, q.len())));
    }
    // An instruction set this CPU lacks.
    if let Some(isa) = Isa::ALL.into_iter().find(|i| !i.available()) {
        let mut out = vec![0f32; q.len()];
        assert!(matches!(
            attention(isa, &sh, &q, &[], &mut out),
            Err(KernelError::IsaUnavailable(_))
        ));
    }
}
