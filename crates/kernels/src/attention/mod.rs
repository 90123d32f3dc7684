//! Fused attention over a paged KV cache (flash-attention style): one pass
//! over the cached keys and values of each sequence with an online softmax,
//! reading f32 / f16 / Q8_0 cache rows in place, grouped-query attention
//! without copying K/V per query head, and the causal and sliding-window
//! masks decided per key from positions (never materialised).
//!
//! The caller owns the cache; this module only reads it ([`KvPage`]) and
//! defines how rows are stored ([`KvType::store`]). One call serves a whole
//! batch: every sequence brings its query rows, their positions and its
//! pages ([`AttnSeq`]).
//!
//! Work is split into tasks (sequence, KV head, tile of query tokens, chunk
//! of keys) that run on rayon; the partial softmax states of the key chunks
//! are merged in key order. The split of a sequence depends only on that
//! sequence (its query count and its pages), never on the other sequences
//! of the batch or on the thread count, so a sequence gets the same bits
//! alone or batched.

mod scalar;

use crate::blocks::{BlockQ8_0, ByteBlock};
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use half::f16;
use rayon::prelude::*;

/// Element type of cached keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvType {
    /// 4 bytes a value: the reference.
    F32,
    /// 2 bytes a value (IEEE half, rounded to nearest even): the default.
    F16,
    /// GGML's Q8_0 blocks: 32 values in 34 bytes (one f16 scale, 32 signed
    /// bytes), llama.cpp's reference quantizer. Rows must be a whole number
    /// of blocks.
    Q8_0,
}

impl KvType {
    /// Every type, in the order `--cache-type-k` lists them.
    pub const ALL: [KvType; 3] = [KvType::F16, KvType::Q8_0, KvType::F32];

    /// llama.cpp's name (`f32`, `f16`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Parses llama.cpp's name (case-insensitive).
    pub fn from_name(name: &str) -> Option<KvType> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Bytes of one cached row of `dim` values, `None` when `dim` cannot be
    /// stored in this type (Q8_0: not a multiple of 32).
    pub fn row_bytes(self, dim: usize) -> Option<usize> {
        match self {
            KvType::F32 => dim.checked_mul(4),
            KvType::F16 => dim.checked_mul(2),
            KvType::Q8_0 => (dim % BlockQ8_0::ELEMS == 0)
                .then(|| dim / BlockQ8_0::ELEMS * std::mem::size_of::<BlockQ8_0>()),
        }
    }

    /// Stores `src` as one row (`dst.len() == row_bytes(src.len())`).
    pub fn store(self, src: &[f32], dst: &mut [u8]) -> Result<()> {
        self.check_row(src.len(), dst.len(), "store a KV row")?;
        match self {
            KvType::F32 => {
                for (o, v) in dst.chunks_exact_mut(4).zip(src) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            KvType::F16 => {
                for (o, v) in dst.chunks_exact_mut(2).zip(src) {
                    o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            KvType::Q8_0 => crate::quant::quantize(mistral_gguf::GgmlType::Q8_0, src, dst)?,
        }
        Ok(())
    }

    /// Reads one row back into `dst` (`src.len() == row_bytes(dst.len())`).
    pub fn load(self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        self.check_row(dst.len(), src.len(), "load a KV row")?;
        scalar::load_row(self, src, dst);
        Ok(())
    }

    fn check_row(self, dim: usize, bytes: usize, op: &'static str) -> Result<()> {
        match self.row_bytes(dim) {
            Some(b) if b == bytes => Ok(()),
            expected => Err(KernelError::Shape {
                op,
                detail: format!(
                    "{} values of {} in {bytes} bytes (expected {expected:?})",
                    dim,
                    self.name()
                ),
            }),
        }
    }
}

/// One page of a sequence's cache: the rows of every KV head for up to
/// `stride` slots. Head `h`'s key row of slot `i` starts at byte
/// `(h * stride + i) * k_row` of `k`, where `k_row` is
/// [`KvType::row_bytes`] of the key type (values likewise in `v` with the
/// value type); slots `0..pos.len()` are valid and slot `i` holds position
/// `pos[i]`.
#[derive(Debug, Clone, Copy)]
pub struct KvPage<'a> {
    pub k: &'a [u8],
    pub v: &'a [u8],
    /// Slots per head in this page's layout.
    pub stride: usize,
    /// Position of each valid slot.
    pub pos: &'a [u32],
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// How keys are stored.
    pub k_type: KvType,
    /// How values are stored (may differ from the keys', as llama.cpp's
    /// `--cache-type-k` / `--cache-type-v`).
    pub v_type: KvType,
    /// Multiplies every score (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding window: a key is visible to a query at `p` when its position
    /// is in `p + 1 - window ..= p`. `None`: every key up to `p`.
    pub window: Option<u32>,
}

impl AttnShape {
    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.n_head / self.n_head_kv
    }

    /// Values in one token's query (and output) row.
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Whether the key at `kp` is visible to the query at `qp`.
    #[inline]
    pub fn visible(&self, qp: u32, kp: u32) -> bool {
        kp <= qp && self.window.is_none_or(|w| qp - kp < w)
    }
}

/// One sequence's share of a batched attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnSeq<'a> {
    /// Its first row in the batch's `q` and `out` (`[tokens, n_head * head_dim]`).
    pub row: usize,
    /// Positions of its query tokens (rows `row..row + qpos.len()`).
    pub qpos: &'a [u32],
    /// Its cache, in any slot order.
    pub pages: &'a [KvPage<'a>],
}

/// `out[t, h] = Σ_s softmax_s(scale · q[t, h] · k_s) · v_s` over the visible
/// keys `s` of KV head `h / group` of `t`'s sequence ([`AttnShape::visible`]),
/// for every query row of every sequence in `seqs`; rows of `out` that belong
/// to no sequence are left as they are. A query that sees no key gets zeros.
pub fn attention(
    isa: Isa,
    shape: &AttnShape,
    q: &[f32],
    seqs: &[AttnSeq<'_>],
    out: &mut [f32],
) -> Result<()> {
    let isa = isa.checked()?;
    check(shape, q, seqs, out)?;
    let tasks = plan(shape, seqs);
    let width = shape.q_width();
    let hd = shape.head_dim;
    let out_ptr = crate::matmul::OutPtr(out.as_mut_ptr());
    tasks.par_iter().for_each(|task| {
        let seq = &seqs[task.seq];
        let rows = task.t1 - task.t0;
        let group = shape.group();
        let mut states = vec![State::new(hd); rows * group];
        for chunk in &task.chunks {
            let mut part = vec![State::new(hd); rows * group];
            scalar::attend(
                shape,
                q,
                seq,
                task.head,
                task.t0..task.t1,
                &seq.pages[chunk.clone()],
                &mut part,
            );
            for (s, p) in states.iter_mut().zip(&part) {
                s.merge(p);
            }
        }
        let _ = isa;
        for t in 0..rows {
            for j in 0..group {
                let h = task.head * group + j;
                let at = (seq.row + task.t0 + t) * width + h * hd;
                let s = &states[t * group + j];
                // SAFETY: every (token row, query head) pair belongs to
                // exactly one task (tasks split tokens and KV heads, and
                // each KV head owns the query heads `head * group..`), and
                // `check` proved `at + hd <= out.len()`.
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(at), hd) };
                s.finish(dst);
            }
        }
    });
    Ok(())
}

/// Running softmax state of one query row: the largest score so far, the sum
/// of `exp(score - max)` and the weighted sum of values.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) max: f32,
    pub(crate) sum: f32,
    pub(crate) acc: Vec<f32>,
}

impl State {
    pub(crate) fn new(dim: usize) -> State {
        State {
            max: f32::NEG_INFINITY,
            sum: 0.0,
            acc: vec![0.0; dim],
        }
    }

    /// Folds `other` (keys after this state's) into `self`.
    pub(crate) fn merge(&mut self, other: &State) {
        if other.sum == 0.0 {
            return;
        }
        if self.sum == 0.0 {
            self.clone_from(other);
            return;
        }
        let max = self.max.max(other.max);
        let a = (self.max - max).exp();
        let b = (other.max - max).exp();
        self.sum = self.sum * a + other.sum * b;
        for (x, y) in self.acc.iter_mut().zip(&other.acc) {
            *x = *x * a + y * b;
        }
        self.max = max;
    }

    /// Writes `acc / sum` (zeros when no key was visible).
    pub(crate) fn finish(&self, dst: &mut [f32]) {
        let inv = if self.sum > 0.0 { 1.0 / self.sum } else { 0.0 };
        for (d, a) in dst.iter_mut().zip(&self.acc) {
            *d = a * inv;
        }
    }
}

/// One unit of work: query tokens `t0..t1` of sequence `seq` against KV head
/// `head`, over the page ranges `chunks` (merged in order).
struct Task {
    seq: usize,
    head: usize,
    t0: usize,
    t1: usize,
    chunks: Vec<std::ops::Range<usize>>,
}

/// Query tokens per task.
const TOKEN_TILE: usize = 16;

fn plan(shape: &AttnShape, seqs: &[AttnSeq<'_>]) -> Vec<Task> {
    let mut tasks = Vec::new();
    for (i, seq) in seqs.iter().enumerate() {
        let n = seq.qpos.len();
        for head in 0..shape.n_head_kv {
            for t0 in (0..n).step_by(TOKEN_TILE) {
                tasks.push(Task {
                    seq: i,
                    head,
                    t0,
                    t1: (t0 + TOKEN_TILE).min(n),
                    chunks: vec![0..seq.pages.len()],
                });
            }
        }
    }
    tasks
}

fn check(shape: &AttnShape, q: &[f32], seqs: &[AttnSeq<'_>], out: &[f32]) -> Result<()> {
    let bad = |detail: String| KernelError::Shape {
        op: "attention",
        detail,
    };
    if shape.n_head_kv == 0 || shape.head_dim == 0 || shape.n_head % shape.n_head_kv != 0 {
        return Err(bad(format!(
            "{} query heads cannot share {} KV heads of {} values",
            shape.n_head, shape.n_head_kv, shape.head_dim
        )));
    }
    if shape.window == Some(0) {
        return Err(bad("a window of 0 positions".into()));
    }
    let row = |t: KvType| {
        t.row_bytes(shape.head_dim).ok_or_else(|| {
            bad(format!(
                "rows of {} values cannot be stored as {}",
                shape.head_dim,
                t.name()
            ))
        })
    };
    let (k_row, v_row) = (row(shape.k_type)?, row(shape.v_type)?);
    let width = shape.q_width();
    if q.len() != out.len() || q.len() % width != 0 {
        return Err(bad(format!(
            "q has {} values and out {}, expected the same multiple of {width}",
            q.len(),
            out.len()
        )));
    }
    let tokens = q.len() / width;
    for (i, s) in seqs.iter().enumerate() {
        if s.row
            .checked_add(s.qpos.len())
            .is_none_or(|end| end > tokens)
        {
            return Err(bad(format!(
                "sequence {i}: rows {}..+{} past the {tokens} query rows",
                s.row,
                s.qpos.len()
            )));
        }
        for (j, p) in s.pages.iter().enumerate() {
            let need = |row: usize| {
                shape
                    .n_head_kv
                    .checked_mul(p.stride)
                    .and_then(|n| n.checked_mul(row))
            };
            let (nk, nv) = (need(k_row), need(v_row));
            if p.pos.len() > p.stride
                || nk.is_none_or(|n| p.k.len() < n)
                || nv.is_none_or(|n| p.v.len() < n)
            {
                return Err(bad(format!(
                    "sequence {i} page {j}: {} slots of stride {} need {nk:?} / {nv:?} bytes, have k {} v {}",
                    p.pos.len(),
                    p.stride,
                    p.k.len(),
                    p.v.len()
                )));
            }
        }
    }
    // Sequences must not share query rows: each output row has one writer.
    let mut spans: Vec<(usize, usize)> = seqs
        .iter()
        .filter(|s| !s.qpos.is_empty())
        .map(|s| (s.row, s.row + s.qpos.len()))
        .collect();
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(bad("two sequences share query rows".into()));
    }
    Ok(())
}
