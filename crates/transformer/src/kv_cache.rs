//! One session's KV cache: for every layer, pages of [`PAGE`] slots holding
//! the keys and values of every KV head in the chosen [`CacheType`]s, the
//! position each slot holds, and the tokens of the context.
//!
//! How positions map to slots follows the model's [`CachePolicy`], decided
//! once in its configuration: without a window, position `p` is in slot `p`
//! (up to the context size; a context shift compacts the slots and rotates the
//! kept keys back, so this stays true); with a window, the cache is a rolling
//! buffer where position `p` lives in slot `p % capacity`. Pages are allocated
//! as the context grows, so a short session holds little memory; dropping the
//! cache frees them.

use mistral_kernels::attention::KvPage;
use rayon::prelude::*;

use crate::config::{CachePolicy, CacheType, ModelConfig};
use crate::error::ModelError;
use crate::generic::GenericCache;
use crate::rope::Rope;

/// Slots per page.
pub(crate) const PAGE: usize = 256;

/// What every session's cache of one model shares: the shape and the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvLayout {
    pub n_layer: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub k_type: CacheType,
    pub v_type: CacheType,
    pub k_row: usize,
    pub v_row: usize,
    pub policy: CachePolicy,
}

impl KvLayout {
    pub fn new(cfg: &ModelConfig) -> KvLayout {
        let row = |t: CacheType| t.row_bytes(cfg.head_dim).unwrap_or(0);
        KvLayout {
            n_layer: cfg.n_layer,
            n_head_kv: cfg.n_head_kv,
            head_dim: cfg.head_dim,
            k_type: cfg.cache_type_k,
            v_type: cfg.cache_type_v,
            k_row: row(cfg.cache_type_k),
            v_row: row(cfg.cache_type_v),
            policy: cfg.cache,
        }
    }

    /// Slots of page `p` (the last page of a capacity that is not a whole
    /// number of pages is shorter).
    fn page_slots(&self, p: usize) -> usize {
        PAGE.min(self.policy.capacity() - p * PAGE)
    }

    /// Bytes the cache takes once it holds `positions` positions (whole pages).
    pub fn bytes_for(&self, positions: usize) -> usize {
        // Every page holds PAGE slots but the last, which ends at the capacity.
        let cap = self.policy.capacity();
        let slots = positions
            .min(cap)
            .div_ceil(PAGE)
            .saturating_mul(PAGE)
            .min(cap);
        slots
            .saturating_mul(self.n_layer * self.n_head_kv)
            .saturating_mul(self.k_row + self.v_row)
    }
}

/// One page of one layer.
struct Page {
    k: Vec<u8>,
    v: Vec<u8>,
    stride: usize,
}

/// A context shift: the first `keep` tokens stayed, the next `discarded` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextShift {
    pub keep: usize,
    pub discarded: usize,
}

/// Where the tokens of one step go.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    /// Slot of each new token.
    pub slots: Vec<usize>,
    /// Position of each new token.
    pub positions: Vec<u32>,
    /// The shift made room for them, if one was needed.
    pub shift: Option<ContextShift>,
}

/// A session's cache.
pub(crate) struct KvCache {
    layout: KvLayout,
    /// `[layer][page]`.
    layers: Vec<Vec<Page>>,
    /// Position held by each slot in use.
    pos: Vec<u32>,
    /// The context: the token at every position since the last reset.
    tokens: Vec<u32>,
    /// The keys and values on the device of the layers a model runs on the
    /// device-generic path (all of them, or the first ones when offloading).
    device: Option<GenericCache>,
    /// The first layer whose keys and values are in host pages.
    host_from: usize,
}

impl KvCache {
    pub fn new(layout: KvLayout) -> KvCache {
        KvCache {
            layers: (0..layout.n_layer).map(|_| Vec::new()).collect(),
            layout,
            pos: Vec::new(),
            tokens: Vec::new(),
            device: None,
            host_from: 0,
        }
    }

    /// A cache whose layers below `host_from` live in `device` (the
    /// bookkeeping of positions and tokens stays here, and the other layers
    /// in pages).
    pub fn on_device(layout: KvLayout, device: GenericCache, host_from: usize) -> KvCache {
        KvCache {
            device: Some(device),
            host_from: host_from.min(layout.n_layer),
            ..KvCache::new(layout)
        }
    }

    /// The device part, for a model on the device-generic path.
    pub fn device_mut(&mut self) -> Option<&mut GenericCache> {
        self.device.as_mut()
    }

    /// The tokens of the context (the next token goes at position `tokens().len()`).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets the context (the pages stay allocated for reuse).
    pub fn reset(&mut self) {
        self.pos.clear();
        self.tokens.clear();
        if let Some(d) = &mut self.device {
            d.truncate(0);
        }
    }

    /// Keeps the first `len` tokens of the context and forgets the rest (a
    /// rolling cache only until it has wrapped around).
    pub fn truncate(&mut self, len: usize) -> Result<(), ModelError> {
        if len >= self.tokens.len() {
            return Ok(());
        }
        if self.pos.len() < self.tokens.len() {
            return Err(ModelError::InvalidInput(format!(
                "cannot go back to {len} tokens: the rolling cache no longer holds them"
            )));
        }
        self.tokens.truncate(len);
        self.pos.truncate(len);
        if let Some(d) = &mut self.device {
            d.truncate(len);
        }
        Ok(())
    }

    /// Bytes of the pages allocated so far.
    pub fn bytes(&self) -> usize {
        let device = self.device.as_ref().map_or(0, |d| d.bytes());
        let slots: usize = self
            .layers
            .get(self.host_from)
            .map_or(0, |l| l.iter().map(|p| p.stride).sum());
        device
            + slots
                * (self.layout.n_layer - self.host_from)
                * self.layout.n_head_kv
                * (self.layout.k_row + self.layout.v_row)
    }

    /// Makes room for `tokens` after the context and records them: shifts the
    /// context when the policy says so, allocates pages, and returns each
    /// token's slot and position. On an error nothing has changed.
    pub fn place(&mut self, tokens: &[u32], rope: &Rope) -> Result<Placement, ModelError> {
        let n = tokens.len();
        if let Some(e) = self.room_error(n) {
            return Err(e);
        }
        let len = self.tokens.len();
        let mut shift = None;
        if let CachePolicy::Shift { ctx, keep } = self.layout.policy {
            if len + n > ctx {
                // llama.cpp's rule: drop half of what follows the kept
                // tokens (more if the new tokens need it; `room_error`
                // made sure they fit).
                let keep = keep.min(len);
                let discard = ((len - keep) / 2).max(len + n - ctx);
                self.shift(keep, discard, rope)?;
                shift = Some(ContextShift {
                    keep,
                    discarded: discard,
                });
            }
        }
        let start = self.tokens.len();
        let cap = self.layout.policy.capacity();
        let slots: Vec<usize> = (start..start + n).map(|p| p % cap).collect();
        let positions: Vec<u32> = (start..start + n).map(|p| p as u32).collect();
        if let Some(&last) = slots.iter().max() {
            self.allocate(last);
        }
        for (&s, &p) in slots.iter().zip(&positions) {
            if s == self.pos.len() {
                self.pos.push(p);
            } else {
                self.pos[s] = p;
            }
        }
        self.tokens.extend_from_slice(tokens);
        Ok(Placement {
            slots,
            positions,
            shift,
        })
    }

    /// Why `n` more tokens cannot be placed, if they cannot (the context is
    /// full without shifting, or they would not fit even after a shift).
    pub fn room_error(&self, n: usize) -> Option<ModelError> {
        let len = self.tokens.len();
        match self.layout.policy {
            CachePolicy::Full { ctx } => (len + n > ctx).then(|| full(len, n, ctx)),
            CachePolicy::Shift { ctx, keep } => {
                (n > ctx - keep.min(len)).then(|| full(len, n, ctx))
            }
            CachePolicy::Rolling { .. } => (len + n > u32::MAX as usize).then(|| {
                ModelError::InvalidInput(format!("a session cannot pass {} positions", u32::MAX))
            }),
        }
    }

    /// Allocates the pages up to the one holding `slot` in every layer.
    fn allocate(&mut self, slot: usize) {
        let l = self.layout;
        let pages = slot / PAGE + 1;
        for layer in &mut self.layers[self.host_from..] {
            while layer.len() < pages {
                let stride = l.page_slots(layer.len());
                layer.push(Page {
                    k: vec![0; l.n_head_kv * stride * l.k_row],
                    v: vec![0; l.n_head_kv * stride * l.v_row],
                    stride,
                });
            }
        }
    }

    /// Stores the keys and values of one step's tokens (`[n, n_head_kv *
    /// head_dim]` each) at their slots in `layer`.
    pub fn write(
        &mut self,
        layer: usize,
        slots: &[usize],
        k: &[f32],
        v: &[f32],
    ) -> Result<(), ModelError> {
        let l = self.layout;
        let hd = l.head_dim;
        let pages = &mut self.layers[layer];
        for (t, &slot) in slots.iter().enumerate() {
            let page = &mut pages[slot / PAGE];
            let i = slot % PAGE;
            for h in 0..l.n_head_kv {
                let src = t * l.n_head_kv * hd + h * hd;
                let row = h * page.stride + i;
                l.k_type.store(
                    &k[src..src + hd],
                    &mut page.k[row * l.k_row..(row + 1) * l.k_row],
                )?;
                l.v_type.store(
                    &v[src..src + hd],
                    &mut page.v[row * l.v_row..(row + 1) * l.v_row],
                )?;
            }
        }
        Ok(())
    }

    /// The pages of `layer` as the attention kernel reads them.
    pub fn pages(&self, layer: usize) -> Vec<KvPage<'_>> {
        let used = self.pos.len();
        self.layers[layer]
            .iter()
            .enumerate()
            .take(used.div_ceil(PAGE))
            .map(|(p, page)| KvPage {
                k: &page.k,
                v: &page.v,
                stride: page.stride,
                pos: &self.pos[p * PAGE..((p + 1) * PAGE).min(used)],
            })
            .collect()
    }

    /// Drops positions `keep..keep + discard`: later slots move down by
    /// `discard` and their keys are rotated back by as many positions, so the
    /// context reads as if the dropped tokens had never been there (llama.cpp's
    /// context shift). Only for the policies where slot == position.
    fn shift(&mut self, keep: usize, discard: usize, rope: &Rope) -> Result<(), ModelError> {
        let l = self.layout;
        let len = self.tokens.len();
        let back = rope.tables(std::iter::once(-(discard as i64)));
        if let Some(d) = &mut self.device {
            let (cos, sin) = back.cos_sin();
            d.shift(keep, discard, cos, sin)?;
        }
        self.layers[self.host_from..]
            .par_iter_mut()
            .for_each(|pages| {
                let mut buf = vec![0f32; l.head_dim];
                for h in 0..l.n_head_kv {
                    for dst in keep..len - discard {
                        let src = dst + discard;
                        for (row, v) in [(l.k_row, false), (l.v_row, true)] {
                            let from = locate(pages, src, h, row);
                            let to = locate(pages, dst, h, row);
                            copy_row(pages, from, to, row, v);
                        }
                        let (p, at) = locate(pages, dst, h, l.k_row);
                        let bytes = &mut pages[p].k[at..at + l.k_row];
                        // Lengths agree by construction (the layout's row size).
                        if l.k_type.load(bytes, &mut buf).is_ok() {
                            rope.apply(&mut buf, 1, &back);
                            let _ = l.k_type.store(&buf, bytes);
                        }
                    }
                }
            });
        self.tokens.drain(keep..keep + discard);
        self.pos.truncate(len - discard);
        Ok(())
    }
}

/// `(page, byte offset)` of head `h`'s row of `slot`, rows of `row` bytes.
fn locate(pages: &[Page], slot: usize, h: usize, row: usize) -> (usize, usize) {
    let p = slot / PAGE;
    (p, (h * pages[p].stride + slot % PAGE) * row)
}

/// Copies one row of keys (or of values, `v`) between two places.
fn copy_row(pages: &mut [Page], from: (usize, usize), to: (usize, usize), row: usize, v: bool) {
    fn part(p: &mut Page, v: bool) -> &mut Vec<u8> {
        if v {
            &mut p.v
        } else {
            &mut p.k
        }
    }
    if from.0 == to.0 {
        part(&mut pages[to.0], v).copy_within(from.1..from.1 + row, to.1);
        return;
    }
    // Two different pages: borrow both.
    let (lo, hi) = pages.split_at_mut(from.0.max(to.0));
    let (src, dst) = if from.0 < to.0 {
        (&mut lo[from.0], &mut hi[0])
    } else {
        (&mut hi[0], &mut lo[to.0])
    };
    part(dst, v)[to.1..to.1 + row].copy_from_slice(&part(src, v)[from.1..from.1 + row]);
}

fn full(len: usize, n: usize, ctx: usize) -> ModelError {
    if len == 0 {
        ModelError::PromptTooLong {
            prompt_tokens: n,
            context: ctx,
        }
    } else {
        ModelError::ContextFull {
            position: len,
            tokens: n,
            context: ctx,
        }
    }
}
