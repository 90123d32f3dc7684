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
//! **Task plan.** A sequence's query tokens are cut into tiles of
//! `max(1, 64 / group)` tokens, so a tile's query rows (tokens × the group
//! of query heads sharing a KV head) share every key and value row read;
//! a job is one tile of one KV head. The sequence's slots, in page order,
//! are cut into chunks sized so that the sequence makes a few dozen units
//! (decode: split-K over the keys; prefill: usually one chunk, the tiles
//! and heads already give enough tasks); chunks whose positions no query of
//! a tile can see get no unit. Units run on the current rayon pool; a job
//! with one unit writes its outputs directly, the others' partial softmax
//! states are merged in chunk order afterwards. Every boundary is a
//! function of the sequence alone (its query count and positions, its pages)
//! and of the shape, never of the rest of the batch or the thread count, so
//! a sequence gets the same bits alone or batched, on any number of
//! threads.
//!
//! **Kernels.** Keys are taken in blocks of up to 64 slots of
//! one page: positions first (a block out of every query's reach is skipped,
//! one inside every query's is not masked), then the block's rows are
//! converted to f32 once and used by all rows of the tile. The scalar
//! reference ([`Isa::Scalar`]) works a key at a time; [`Isa::Avx2`],
//! [`Isa::Avx512`] (and [`Isa::Amx`], which runs the AVX-512 form) and the
//! AArch64 paths ([`Isa::Neon`], [`Isa::NeonDot`]) share one block kernel
//! written over 16-, 8- or 4-lane vectors:
//! query rows across the lanes with a register-tiled microkernel for tiles
//! of many rows (prefill), head dimensions across the lanes with dot
//! products reduced together for few rows (decode), and a polynomial `2^x`
//! for the online softmax, kept in log2 units. They agree with the scalar
//! path to f32 rounding, not bit for bit.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
// Only the x86-64 and AArch64 paths instantiate the vector kernel.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
mod kernel;
#[cfg(target_arch = "aarch64")]
mod neon;
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
            KvType::Q8_0 => dim
                .is_multiple_of(BlockQ8_0::ELEMS)
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
                // In chunks through `half`'s slice conversion (`vcvtps2ph`
                // 8 values at a time where the CPU has F16C; the same
                // rounding as `f16::from_f32`, value by value).
                use half::slice::HalfFloatSliceExt;
                let mut tmp = [f16::ZERO; 64];
                for (o, v) in dst.chunks_mut(128).zip(src.chunks(64)) {
                    let h = &mut tmp[..v.len()];
                    h.convert_from_f32_slice(v);
                    for (o, h) in o.chunks_exact_mut(2).zip(h.iter()) {
                        o.copy_from_slice(&h.to_le_bytes());
                    }
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
///
/// Runs on the current rayon pool. Each sequence's results depend only on
/// its own queries, positions and pages (and on `isa`), not on the other
/// sequences of the batch or on the number of threads.
pub fn attention(
    isa: Isa,
    shape: &AttnShape,
    q: &[f32],
    seqs: &[AttnSeq<'_>],
    out: &mut [f32],
) -> Result<()> {
    let isa = isa.checked()?;
    let rows = check(shape, q, seqs, out)?;
    let plan = Plan::new(shape, seqs);
    run(isa, shape, rows, q, seqs, &plan, out)
}

/// Query tokens × query heads per tile: a tile of `max(1, TILE_ROWS / group)`
/// tokens shares every key and value row it reads among its rows.
const TILE_ROWS: usize = 64;

/// Keys per block: the unit of conversion to f32, of position tests and of
/// one online-softmax step (a multiple of every kernel's key step).
pub(crate) const BLOCK_KEYS: usize = 64;

/// Fewest keys in a chunk (a multiple of [`BLOCK_KEYS`]).
const MIN_CHUNK: usize = 256;

/// Units a sequence is split into where its keys allow: enough for 16
/// threads with one long sequence, few enough that merging stays cheap.
const TARGET_UNITS: usize = 64;

/// The output of one tile of one sequence for one KV head (its `group`
/// query heads), and the units whose states are merged, in key order, into
/// it.
struct Job {
    seq: usize,
    head: usize,
    t0: usize,
    t1: usize,
    units: std::ops::Range<usize>,
}

/// A job's tile against one chunk of its sequence's keys: `keys` slots from
/// slot `slot` of page `page` on, in page order.
struct UnitSpec {
    job: usize,
    page: usize,
    slot: usize,
    keys: usize,
}

/// A run of consecutive slots of a sequence (page order), with the range of
/// their positions.
struct Chunk {
    page: usize,
    slot: usize,
    keys: usize,
    min: u32,
    max: u32,
}

struct Plan {
    jobs: Vec<Job>,
    units: Vec<UnitSpec>,
}

impl Plan {
    /// Splits every sequence into tiles of query tokens × KV heads × chunks
    /// of keys. Every boundary is a function of the sequence alone (its query
    /// count, positions and pages) and of the shape; chunks that no query of
    /// a tile can see get no unit.
    fn new(shape: &AttnShape, seqs: &[AttnSeq<'_>]) -> Plan {
        let (mut jobs, mut units) = (Vec::new(), Vec::new());
        let group = shape.group();
        let tile = (TILE_ROWS / group).max(1);
        for (si, seq) in seqs.iter().enumerate() {
            let n = seq.qpos.len();
            if n == 0 {
                continue;
            }
            let tiles = n.div_ceil(tile);
            let keys: usize = seq.pages.iter().map(|p| p.pos.len()).sum();
            let chunks = chunks(seq.pages, chunk_keys(keys, tiles * shape.n_head_kv));
            // Per tile: the smallest position any of its queries can see and
            // the largest.
            let reach: Vec<(u32, u32)> = seq
                .qpos
                .chunks(tile)
                .map(|ps| {
                    let lo = ps.iter().map(|&p| lowest_visible(shape, p)).min();
                    (lo.unwrap_or(0), ps.iter().copied().max().unwrap_or(0))
                })
                .collect();
            for head in 0..shape.n_head_kv {
                for (ti, &(lo, hi)) in reach.iter().enumerate() {
                    let u0 = units.len();
                    for c in chunks.iter().filter(|c| c.min <= hi && c.max >= lo) {
                        units.push(UnitSpec {
                            job: jobs.len(),
                            page: c.page,
                            slot: c.slot,
                            keys: c.keys,
                        });
                    }
                    let t0 = ti * tile;
                    jobs.push(Job {
                        seq: si,
                        head,
                        t0,
                        t1: (t0 + tile).min(n),
                        units: u0..units.len(),
                    });
                }
            }
        }
        Plan { jobs, units }
    }
}

/// Keys per chunk for a sequence of `keys` keys whose tiles × KV heads make
/// `jobs` jobs: about [`TARGET_UNITS`] units in all, chunks of at least
/// [`MIN_CHUNK`] keys, in whole blocks.
fn chunk_keys(keys: usize, jobs: usize) -> usize {
    let per_job = TARGET_UNITS.div_ceil(jobs.max(1));
    keys.div_ceil(per_job)
        .next_multiple_of(BLOCK_KEYS)
        .max(MIN_CHUNK)
}

/// The sequence's slots in page order, cut every `size` slots.
fn chunks(pages: &[KvPage<'_>], size: usize) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut room = 0;
    for (pi, p) in pages.iter().enumerate() {
        let mut s = 0;
        while s < p.pos.len() {
            if room == 0 {
                out.push(Chunk {
                    page: pi,
                    slot: s,
                    keys: 0,
                    min: u32::MAX,
                    max: 0,
                });
                room = size;
            }
            let take = room.min(p.pos.len() - s);
            let part = &p.pos[s..s + take];
            if let Some(c) = out.last_mut() {
                c.keys += take;
                c.min = part.iter().copied().fold(c.min, u32::min);
                c.max = part.iter().copied().fold(c.max, u32::max);
            }
            room -= take;
            s += take;
        }
    }
    out
}

/// The smallest key position the query at `qp` sees.
pub(crate) fn lowest_visible(shape: &AttnShape, qp: u32) -> u32 {
    shape
        .window
        .map_or(0, |w| qp.saturating_sub(w.saturating_sub(1)))
}

/// What the kernels see of one unit: query tokens `qpos` (batch rows
/// `row0..`) of one sequence against KV head `head`, over `keys` slots of
/// `pages` from slot `slot` of page `page` on.
pub(crate) struct Unit<'a> {
    pub(crate) shape: &'a AttnShape,
    pub(crate) k_row: usize,
    pub(crate) v_row: usize,
    pub(crate) q: &'a [f32],
    pub(crate) row0: usize,
    pub(crate) qpos: &'a [u32],
    pub(crate) head: usize,
    pages: &'a [KvPage<'a>],
    page: usize,
    slot: usize,
    keys: usize,
}

/// Up to [`BLOCK_KEYS`] consecutive slots of one page: their key rows,
/// value rows and positions.
pub(crate) struct Block<'a> {
    pub(crate) k: &'a [u8],
    pub(crate) v: &'a [u8],
    pub(crate) pos: &'a [u32],
}

impl<'a> Block<'a> {
    /// Slots `keys` of the block.
    pub(crate) fn slice(&self, keys: std::ops::Range<usize>, u: &Unit<'_>) -> Block<'a> {
        Block {
            k: &self.k[keys.start * u.k_row..keys.end * u.k_row],
            v: &self.v[keys.start * u.v_row..keys.end * u.v_row],
            pos: &self.pos[keys],
        }
    }
}

impl<'a> Unit<'a> {
    /// Query rows (tile tokens × group heads, token-major).
    pub(crate) fn rows(&self) -> usize {
        self.qpos.len() * self.shape.group()
    }

    /// Query of tile token `t`, head `g` of the group.
    pub(crate) fn q_row(&self, t: usize, g: usize) -> &'a [f32] {
        let d = self.shape.head_dim;
        let h = self.head * self.shape.group() + g;
        &self.q[(self.row0 + t) * self.shape.q_width() + h * d..][..d]
    }

    /// The positions query `qp` sees: `lo..=hi`.
    pub(crate) fn bounds(&self, qp: u32) -> (u32, u32) {
        (lowest_visible(self.shape, qp), qp)
    }

    /// The unit's slots in order, a block of at most [`BLOCK_KEYS`] slots
    /// of one page at a time (blocks start where the unit or a page starts,
    /// so they are a function of the sequence).
    pub(crate) fn blocks(&self) -> Blocks<'a> {
        Blocks {
            pages: self.pages.get(self.page..).unwrap_or(&[]),
            slot: self.slot,
            left: self.keys,
            head: self.head,
            k_row: self.k_row,
            v_row: self.v_row,
        }
    }
}

/// Iterator of a unit's [`Block`]s (an iterator rather than a callback, so
/// the kernels' loop bodies stay inside their `#[target_feature]` functions).
pub(crate) struct Blocks<'a> {
    pages: &'a [KvPage<'a>],
    slot: usize,
    left: usize,
    head: usize,
    k_row: usize,
    v_row: usize,
}

impl<'a> Iterator for Blocks<'a> {
    type Item = Block<'a>;

    #[inline]
    fn next(&mut self) -> Option<Block<'a>> {
        while self.left > 0 {
            let (p, rest) = self.pages.split_first()?;
            if self.slot >= p.pos.len() {
                self.pages = rest;
                self.slot = 0;
                continue;
            }
            let (i, base) = (self.slot, self.head * p.stride);
            let e = (i + BLOCK_KEYS).min(p.pos.len()).min(i + self.left);
            self.left -= e - i;
            self.slot = e;
            return Some(Block {
                k: &p.k[(base + i) * self.k_row..(base + e) * self.k_row],
                v: &p.v[(base + i) * self.v_row..(base + e) * self.v_row],
                pos: &p.pos[i..e],
            });
        }
        None
    }
}

/// One task of the first parallel pass: a unit that is its job's only one
/// (finished straight into the job's outputs) or one of several (its state
/// kept for the merge).
enum Work<'a, 'b> {
    Direct {
        unit: usize,
        out: &'a mut [&'b mut [f32]],
    },
    Partial {
        unit: usize,
        state: &'a mut [f32],
    },
}

thread_local! {
    /// Each worker thread's kernel buffers, reused across tasks and calls.
    static SCRATCH: std::cell::RefCell<kernel::Scratch> =
        std::cell::RefCell::new(kernel::Scratch::default());
}

fn run(
    isa: Isa,
    shape: &AttnShape,
    (k_row, v_row): (usize, usize),
    q: &[f32],
    seqs: &[AttnSeq<'_>],
    plan: &Plan,
    out: &mut [f32],
) -> Result<()> {
    let (g, d, nkv) = (shape.group(), shape.head_dim, shape.n_head_kv);
    let internal = || KernelError::Shape {
        op: "attention",
        detail: "internal: two jobs write one output".into(),
    };
    // Each token's outputs of each KV head's query heads, in job order.
    let mut pieces: Vec<Option<&mut [f32]>> = out.chunks_exact_mut(g * d).map(Some).collect();
    let mut ordered: Vec<&mut [f32]> = Vec::new();
    for job in &plan.jobs {
        for t in job.t0..job.t1 {
            let i = (seqs[job.seq].row + t) * nkv + job.head;
            ordered.push(
                pieces
                    .get_mut(i)
                    .and_then(Option::take)
                    .ok_or_else(internal)?,
            );
        }
    }
    let state_len = |job: &Job| (job.t1 - job.t0) * g * (d + 2);
    let partial_len: usize = plan
        .jobs
        .iter()
        .filter(|j| j.units.len() > 1)
        .map(|j| j.units.len() * state_len(j))
        .sum();
    let mut partial = vec![0f32; partial_len];
    let (mut rest, mut prest) = (&mut ordered[..], &mut partial[..]);
    let mut works = Vec::with_capacity(plan.units.len());
    let mut merges = Vec::new();
    let mut offset = 0;
    for (ji, job) in plan.jobs.iter().enumerate() {
        let (mine, r) = std::mem::take(&mut rest).split_at_mut(job.t1 - job.t0);
        rest = r;
        match job.units.len() {
            0 => mine.iter_mut().for_each(|p| p.fill(0.0)),
            1 => works.push(Work::Direct {
                unit: job.units.start,
                out: mine,
            }),
            n => {
                let len = state_len(job);
                for unit in job.units.clone() {
                    let (state, r) = std::mem::take(&mut prest).split_at_mut(len);
                    prest = r;
                    works.push(Work::Partial { unit, state });
                }
                merges.push((ji, offset, mine));
                offset += n * len;
            }
        }
    }
    let unit = |i: usize| {
        let spec = &plan.units[i];
        let job = &plan.jobs[spec.job];
        let seq = &seqs[job.seq];
        Unit {
            shape,
            k_row,
            v_row,
            q,
            row0: seq.row + job.t0,
            qpos: &seq.qpos[job.t0..job.t1],
            head: job.head,
            pages: seq.pages,
            page: spec.page,
            slot: spec.slot,
            keys: spec.keys,
        }
    };
    works.into_par_iter().for_each(|w| {
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            match w {
                Work::Direct { unit: i, out } => {
                    let u = unit(i);
                    let mut state = std::mem::take(&mut sc.state);
                    state.resize(u.rows() * (d + 2), 0.0);
                    run_unit(isa, &u, sc, &mut state);
                    finish(&state, out, g, d);
                    sc.state = state;
                }
                Work::Partial { unit: i, state } => run_unit(isa, &unit(i), sc, state),
            }
        })
    });
    let partial = &partial[..];
    merges.into_par_iter().for_each(|(ji, at, out)| {
        let job = &plan.jobs[ji];
        let len = state_len(job);
        let parts = &partial[at..at + job.units.len() * len];
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            sc.state.clear();
            sc.state.extend_from_slice(&parts[..len]);
            for p in parts[len..].chunks_exact(len) {
                for (a, b) in sc.state.chunks_exact_mut(d + 2).zip(p.chunks_exact(d + 2)) {
                    merge(a, b);
                }
            }
            finish(&sc.state, out, g, d);
        })
    });
    Ok(())
}

/// Runs one unit on the chosen instruction set, writing its final state to
/// `state` (`rows × (head_dim + 2)`: each row's running maximum of the
/// log2-scaled scores, the sum of `2^(score − max)` and the weighted sum of
/// values).
fn run_unit(isa: Isa, u: &Unit<'_>, sc: &mut kernel::Scratch, state: &mut [f32]) {
    debug_assert_eq!(state.len(), u.rows() * (u.shape.head_dim + 2));
    #[cfg(target_arch = "x86_64")]
    {
        if isa.has_avx512() {
            // SAFETY: `isa` came through `Isa::checked`, and the AVX-512
            // paths are available only where the CPU has AVX-512 F/BW/VL,
            // AVX2, FMA and F16C; `state` holds the unit's rows.
            unsafe { avx512::run_unit(u, sc, state) };
            return;
        }
        if isa.has_avx2() {
            // SAFETY: as above, AVX2, FMA and F16C are available.
            unsafe { avx2::run_unit(u, sc, state) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if isa.is_neon() {
        // SAFETY: `isa` came through `Isa::checked`, so NEON is available;
        // `state` holds the unit's rows.
        unsafe { neon::run_unit(u, sc, state) };
        return;
    }
    let _ = isa;
    scalar::run_unit(u, sc, state);
}

/// Folds `b` (one row's state over later keys) into `a`.
fn merge(a: &mut [f32], b: &[f32]) {
    let (bm, bl) = (b[0], b[1]);
    if bl == 0.0 {
        return;
    }
    if a[1] == 0.0 {
        a.copy_from_slice(b);
        return;
    }
    let m = a[0].max(bm);
    let (x, y) = ((a[0] - m).exp2(), (bm - m).exp2());
    a[0] = m;
    a[1] = a[1] * x + bl * y;
    for (p, q) in a[2..].iter_mut().zip(&b[2..]) {
        *p = *p * x + q * y;
    }
}

/// Writes each row's `acc / sum` (zeros where no key was visible) into the
/// job's outputs (one piece of `group × head_dim` values per token).
fn finish(states: &[f32], out: &mut [&mut [f32]], g: usize, d: usize) {
    for (piece, st) in out.iter_mut().zip(states.chunks_exact(g * (d + 2))) {
        for (o, s) in piece.chunks_exact_mut(d).zip(st.chunks_exact(d + 2)) {
            let inv = if s[1] > 0.0 { 1.0 / s[1] } else { 0.0 };
            for (x, a) in o.iter_mut().zip(&s[2..]) {
                *x = a * inv;
            }
        }
    }
}

/// Validates the call; returns the bytes of one key row and of one value row.
fn check(
    shape: &AttnShape,
    q: &[f32],
    seqs: &[AttnSeq<'_>],
    out: &[f32],
) -> Result<(usize, usize)> {
    let bad = |detail: String| KernelError::Shape {
        op: "attention",
        detail,
    };
    if shape.n_head == 0
        || shape.n_head_kv == 0
        || shape.head_dim == 0
        || !shape.n_head.is_multiple_of(shape.n_head_kv)
    {
        return Err(bad(format!(
            "{} query heads cannot share {} KV heads of {} values",
            shape.n_head, shape.n_head_kv, shape.head_dim
        )));
    }
    if shape.window == Some(0) {
        return Err(bad("a window of 0 positions".into()));
    }
    if !shape.scale.is_finite() {
        return Err(bad(format!("a score scale of {}", shape.scale)));
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
    let width = shape
        .n_head
        .checked_mul(shape.head_dim)
        .ok_or_else(|| bad("query rows too wide".into()))?;
    if q.len() != out.len() || !q.len().is_multiple_of(width) {
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
    Ok((k_row, v_row))
}
