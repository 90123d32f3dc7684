//! Correctness 2 and 3: prefill vs incremental decoding (with and without a
//! sliding window, including after the rolling cache has wrapped), the
//! receptive field of a 1-layer sliding-window model, and the context shift.

mod common;

use common::*;
use mistral_transformer::synth::{SynthArch, SynthType};
use mistral_transformer::{
    FinishReason, LoadOptions, MemoryPlan, ModelError, SamplingParams, MAX_UBATCH,
};

/// Batched and incremental runs compute the same function with different
/// summation shapes: they agree to f32 rounding.
const TOL: f32 = 1e-5;

fn opts(window: Option<usize>, ctx: Option<usize>) -> LoadOptions {
    LoadOptions {
        sliding_window: window,
        ctx_size: ctx,
        ..exact()
    }
}

/// Last logits of `toks` fed at once, one by one, and in chunks of 7.
fn three_ways(file: &mistral_gguf::GgufFile, o: LoadOptions, toks: &[u32]) -> [Vec<f32>; 3] {
    let mut a = load(file, o.clone());
    let all = a.forward_last(toks).unwrap();
    assert_eq!(a.position(), toks.len());
    let mut b = load(file, o.clone());
    let mut last = None;
    for &t in toks {
        last = Some(b.forward_last(&[t]).unwrap());
    }
    let one = last.unwrap();
    let mut c = load(file, o);
    let mut last = None;
    for ch in toks.chunks(7) {
        last = Some(c.forward(ch).unwrap());
    }
    let chunked = last.unwrap().pop().unwrap();
    [all, one, chunked]
}

#[test]
fn prefill_equals_incremental_without_window() {
    let file = synth_file(&tiny(SynthArch::Mistral, SynthType::F32));
    let toks = tokens(300, 40, 1);
    let [all, one, chunked] = three_ways(&file, opts(None, Some(64)), &toks);
    assert!(rel_err(&one, &all) < TOL, "{}", rel_err(&one, &all));
    assert!(rel_err(&chunked, &all) < TOL);
    // And all three equal the reference.
    let want = RefModel::load(&file).forward(&toks, None).pop().unwrap();
    assert!(rel_err(&all, &want) < TOL);
}

#[test]
fn prefill_equals_incremental_with_wrapped_rolling_window() {
    // Window 6: the rolling cache holds 6 + MAX_UBATCH slots; 600 tokens wrap it,
    // and the prefill runs as two batches (512 + 88).
    let file = synth_file(&tiny(SynthArch::Mixtral, SynthType::F32));
    let n = MAX_UBATCH + 88;
    let toks = tokens(300, n, 2);
    let [all, one, chunked] = three_ways(&file, opts(Some(6), None), &toks);
    assert!(rel_err(&one, &all) < TOL, "{}", rel_err(&one, &all));
    assert!(rel_err(&chunked, &all) < TOL);
    let want = RefModel::load(&file).forward(&toks, Some(6)).pop().unwrap();
    assert!(rel_err(&all, &want) < TOL, "{}", rel_err(&all, &want));
}

#[test]
fn window_bounds_the_receptive_field_of_one_layer() {
    let mut spec = tiny(SynthArch::Mistral, SynthType::F32);
    spec.n_layer = 1;
    let file = synth_file(&spec);
    let w = 4;
    let toks = tokens(300, 12, 5);
    let last = |t: &[u32]| load(&file, opts(Some(w), None)).forward_last(t).unwrap();
    let base = last(&toks);
    // The last query (position 11) sees positions 8..=11.
    for far in [0, 3, 7] {
        let mut t = toks.clone();
        t[far] = (t[far] + 1) % 300;
        assert_eq!(
            last(&t),
            base,
            "changing position {far} (outside the window) changed the output"
        );
    }
    for near in [8, 10] {
        let mut t = toks.clone();
        t[near] = (t[near] + 1) % 300;
        assert!(
            rel_err(&last(&t), &base) > 1e-3,
            "changing position {near} (inside the window) did nothing"
        );
    }
    // Without the window, position 0 matters.
    let full = |t: &[u32]| load(&file, opts(None, None)).forward_last(t).unwrap();
    let mut t = toks.clone();
    t[0] = (t[0] + 1) % 300;
    assert!(rel_err(&full(&t), &full(&toks)) > 1e-4);
}

#[test]
fn reset_and_kv_cache_size() {
    let file = synth_file(&tiny(SynthArch::Mistral, SynthType::F32));
    let mut m = load(&file, opts(None, Some(32)));
    let toks = tokens(300, 10, 9);
    assert_eq!(
        m.kv_cache_bytes(),
        0,
        "pages are allocated as the context grows"
    );
    let a = m.forward_last(&toks).unwrap();
    m.reset();
    assert_eq!(m.position(), 0);
    let b = m.forward_last(&toks).unwrap();
    assert_eq!(a, b);
    // 2 layers x (K + V) x 4 KV heads x 32 positions x 32 dims x 4 bytes: a
    // context of 32 takes one page of 32 slots.
    assert_eq!(m.kv_cache_bytes(), 2 * 2 * 4 * 32 * 32 * 4);
    assert_eq!(m.model.kv_cache_bytes_for(1000), 2 * 2 * 4 * 32 * 32 * 4);
    // A rolling cache of window 16 holds 16 + MAX_UBATCH slots at most, in
    // pages of 256; ten tokens take the first page.
    let mut w = load(&file, opts(Some(16), None));
    w.forward_last(&toks).unwrap();
    assert_eq!(w.kv_cache_bytes(), 2 * 2 * 4 * 256 * 32 * 4);
    assert_eq!(
        w.model.kv_cache_bytes_for(usize::MAX),
        2 * 2 * 4 * (16 + MAX_UBATCH) * 32 * 4
    );
    // f16 halves the f32 figure, q8_0 takes 34 bytes per 32 values.
    for (t, bytes) in [
        (mistral_transformer::CacheType::F16, 2 * 32),
        (mistral_transformer::CacheType::Q8_0, 34),
    ] {
        let m = load(
            &file,
            LoadOptions {
                cache_type_k: t,
                cache_type_v: t,
                ..opts(None, Some(32))
            },
        );
        assert_eq!(m.model.kv_cache_bytes_for(32), 2 * 2 * 4 * 32 * bytes);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let file = synth_file(&tiny(SynthArch::Mistral, SynthType::F32));
    let mut m = load(&file, opts(None, Some(16)));
    assert!(matches!(m.forward(&[]), Err(ModelError::EmptyPrompt)));
    m.reset();
    assert!(matches!(
        m.forward(&[300]),
        Err(ModelError::TokenOutOfRange {
            id: 300,
            n_vocab: 300
        })
    ));
    let long = tokens(300, 17, 1);
    let e = m.forward(&long).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::PromptTooLong {
                prompt_tokens: 17,
                context: 16
            }
        ),
        "{e}"
    );
    m.reset();
    m.forward(&long[..10]).unwrap();
    let e = m.forward(&long[..7]).unwrap_err();
    assert!(matches!(e, ModelError::ContextFull { .. }), "{e}");
    assert!(e.to_string().contains("context"));
}

#[test]
fn a_context_shift_equals_a_fresh_run_on_the_kept_tokens_in_one_layer() {
    // With one layer, keys and values depend on their own token only, so
    // after a shift (keys rotated back by the dropped positions) the cache
    // holds what a fresh run over the kept tokens computes.
    let mut spec = tiny(SynthArch::Mistral, SynthType::F32);
    spec.n_layer = 1;
    let file = synth_file(&spec);
    let shifting = LoadOptions {
        ctx_size: Some(16),
        context_shift: true,
        keep: 2,
        ..exact()
    };
    let mut m = load(&file, shifting);
    let bos = m.model.tokenizer().bos_id().unwrap();
    let mut toks = tokens(300, 16, 21);
    toks[0] = bos;
    m.forward(&toks).unwrap();
    assert_eq!(m.session.context_shifts(), 0);
    let got = m.forward_last(&[42]).unwrap();
    assert_eq!(m.session.context_shifts(), 1);
    // BOS + 2 kept, half of the other 13 (6) dropped, then the new token.
    let kept: Vec<u32> = [&toks[..3], &toks[9..], &[42]].concat();
    assert_eq!(m.session.tokens(), &kept[..]);
    let want = load(&file, opts(None, Some(16)))
        .forward_last(&kept)
        .unwrap();
    let e = rel_err(&got, &want);
    assert!(e < 1e-5, "relative error {e}");
    // And it differs from what the unshifted context gives (the test can fail).
    let unshifted = load(&file, opts(None, Some(32)))
        .forward_last(&[&toks[..], &[42]].concat())
        .unwrap();
    assert!(rel_err(&unshifted, &want) > 1e-3);
}

#[test]
fn generation_goes_on_past_the_context_in_bounded_memory() {
    let file = synth_file(&tiny(SynthArch::Mistral, SynthType::Q8_0));
    let o = LoadOptions {
        ctx_size: Some(32),
        ..LoadOptions::default()
    };
    let m = load(&file, o);
    let mut session = m.model.new_session();
    let params = SamplingParams {
        max_tokens: Some(100),
        ignore_eos: true,
        ..SamplingParams::greedy()
    };
    let prompt = tokens(300, 10, 3);
    let mut g = session.generate_tokens(&prompt, &params).unwrap();
    let n = g.by_ref().inspect(|t| assert!(t.is_ok())).count();
    assert_eq!(n, 100);
    assert_eq!(g.finish_reason(), Some(FinishReason::MaxTokens));
    assert!(g.stats().context_shifts >= 3, "{:?}", g.stats());
    drop(g);
    assert!(session.position() <= 32);
    assert!(session.kv_cache_bytes() <= m.model.kv_cache_bytes_for(32));
    // Without shifting, the same run stops at the context.
    let m = load(
        &file,
        LoadOptions {
            ctx_size: Some(32),
            context_shift: false,
            ..LoadOptions::default()
        },
    );
    let mut session = m.model.new_session();
    let mut g = session.generate_tokens(&prompt, &params).unwrap();
    let n = g.by_ref().count();
    assert_eq!(g.finish_reason(), Some(FinishReason::ContextFull));
    assert_eq!(n, 32 - 10 + 1);
}

#[test]
fn the_memory_plan_matches_what_loading_takes() {
    for ty in [SynthType::F32, SynthType::Q4_K_M] {
        let file = synth_file(&tiny(SynthArch::Mistral, ty));
        let o = LoadOptions {
            ctx_size: Some(300),
            ..LoadOptions::default()
        };
        let plan = MemoryPlan::for_file(&file, &o, 3).unwrap();
        let m = load(&file, o);
        assert_eq!(plan.positions, 300);
        assert_eq!(
            plan.kv_per_session as usize,
            m.model.kv_cache_bytes_for(300)
        );
        assert_eq!(plan.kv_cache, 3 * plan.kv_per_session);
        // The file's tensor bytes, Q4_K regrouped (+64 bytes per 16 blocks).
        let file_bytes: u64 = file.tensors().iter().map(|t| t.n_bytes()).sum();
        assert_eq!(m.model.weight_bytes() as u64, file_bytes);
        if ty == SynthType::F32 {
            assert_eq!(plan.weights, file_bytes);
        } else {
            assert!(plan.weights > file_bytes && plan.weights < file_bytes * 103 / 100);
        }
        assert!(plan.total() > plan.weights + plan.kv_cache);
    }
}
