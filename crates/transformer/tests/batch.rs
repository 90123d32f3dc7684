//! Many sessions over one model: a batched step gives each session what it
//! gets alone; the scheduler (continuous batching, chunked prefill, queueing
//! under a session limit and a KV budget, cancellation, prefix reuse) streams
//! each request the tokens it gets alone; sessions on several threads share
//! one model.

mod common;

use std::sync::Arc;

use common::*;
use mistral_transformer::synth::{SynthArch, SynthType};
use mistral_transformer::{
    BatchSeq, CacheType, CancelToken, Engine, Event, FinishReason, GenerateOptions, LoadOptions,
    Model, ModelError, Request, RequestHandle, SamplingParams, Scheduler, SchedulerOptions,
    Session,
};

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Model>();
    send_sync::<Engine>();
    send_sync::<CancelToken>();
    send::<Session>();
    send::<RequestHandle>();
    send::<Scheduler>();
};

/// A session's logits batched and alone. The attention kernel splits a
/// sequence's work the same way whatever else is in the batch, and every
/// k-quant product gives the scalar kernel's bits at any batch size on every
/// path (`crates/kernels/tests/batch_invariance.rs`), as Q8_0's do on the
/// scalar, NEON, AVX-512 and AMX paths (one FMA per block, in order): there
/// the logits are the same bits, with f32 and f16 caches alike.
///
/// Q8_0 on AVX2: the tiled kernel (from 8 rows) sums each block into one
/// lane where the row kernels keep 8 partial sums, and its last-bit
/// differences reach the next product's 8-bit activations, where one can
/// round to the neighbouring step (1/127 of its block's largest): measured
/// 5.1e-3 of the row's largest logit with f32 caches. With f16 caches such a
/// difference in a key or value can also round to the neighbouring f16,
/// 2^-11 of the value. Bound: 2e-2.
fn batch_tolerance(ty: SynthType) -> f32 {
    let isa = mistral_kernels::Isa::best();
    match ty {
        SynthType::Q8_0 if isa == mistral_kernels::Isa::Avx2 => 2e-2,
        SynthType::Q8_0 | SynthType::Q4_K_M => 0.0,
        _ => unreachable!("not a type of these tests"),
    }
}

fn model(arch: SynthArch, ty: SynthType, cache: CacheType) -> Model {
    model_ctx(arch, ty, cache, 256)
}

fn model_ctx(arch: SynthArch, ty: SynthType, cache: CacheType, ctx: usize) -> Model {
    let file = synth_file(&tiny(arch, ty));
    Model::from_gguf(
        &file,
        LoadOptions {
            cache_type_k: cache,
            cache_type_v: cache,
            ctx_size: Some(ctx),
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// What one session does at each step: `None` (sits out), or tokens to run
/// (`Some(vec![])` means: decode the greedy token of its last logits).
type Script = Vec<Vec<Option<Vec<u32>>>>;

/// Runs the script with all sessions batched per step, or each session
/// alone; returns every session's logits rows in order.
fn run_script(model: &Model, script: &Script, batched: bool) -> Vec<Vec<Vec<f32>>> {
    let n = script[0].len();
    let v = model.config().n_vocab;
    let mut sessions: Vec<Session> = (0..n).map(|_| model.new_session()).collect();
    let mut last: Vec<Option<u32>> = vec![None; n];
    let mut out: Vec<Vec<Vec<f32>>> = vec![Vec::new(); n];
    let order: Vec<Vec<usize>> = if batched {
        vec![(0..n).collect()]
    } else {
        (0..n).map(|i| vec![i]).collect()
    };
    for group in order {
        for step in script {
            let mut toks: Vec<(usize, Vec<u32>)> = Vec::new();
            for &i in &group {
                if let Some(t) = &step[i] {
                    let t = if t.is_empty() {
                        vec![last[i].expect("a decode after logits")]
                    } else {
                        t.clone()
                    };
                    toks.push((i, t));
                }
            }
            if toks.is_empty() {
                continue;
            }
            let mut refs: Vec<&mut Session> = Vec::new();
            let mut rest: &mut [Session] = &mut sessions;
            let mut base = 0;
            for (i, _) in &toks {
                let (_, tail) = rest.split_at_mut(i - base);
                let (one, tail) = tail.split_at_mut(1);
                refs.push(&mut one[0]);
                rest = tail;
                base = i + 1;
            }
            let mut batch: Vec<BatchSeq<'_>> = refs
                .into_iter()
                .zip(&toks)
                .map(|(session, (_, tokens))| BatchSeq {
                    session,
                    tokens,
                    logits: 1,
                })
                .collect();
            let logits = model.step(&mut batch).unwrap();
            for ((i, _), l) in toks.iter().zip(logits) {
                assert_eq!(l.len(), v);
                last[*i] = Some(argmax(&l));
                out[*i].push(l);
            }
        }
    }
    out
}

/// Three sessions of different lengths: in the same steps some prefill
/// (one in two chunks), some decode, one joins late.
fn script() -> Script {
    let p = |n: usize, seed: u64| Some(tokens(300, n, seed));
    let d = || Some(Vec::new());
    let mut s: Script = vec![
        vec![p(9, 1), p(7, 2), None],
        vec![d(), p(7, 3), p(5, 4)],
        vec![d(), None, d()],
    ];
    for _ in 0..6 {
        s.push(vec![d(), d(), d()]);
    }
    s
}

/// Compares the logits of every session, alone and batched: the greedy
/// token of every row is the same, and the logits agree within `tol`.
/// Returns the worst relative difference.
fn compare(alone: &[Vec<Vec<f32>>], batched: &[Vec<Vec<f32>>], tol: f32, what: &str) -> f32 {
    let mut worst = 0f32;
    for (i, (a, b)) in alone.iter().zip(batched).enumerate() {
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(argmax(x), argmax(y), "{what}: session {i}, row {k}");
            let e = rel_err(y, x);
            assert!(
                e <= tol,
                "{what}: session {i}, row {k}: relative difference {e}"
            );
            worst = worst.max(e);
        }
    }
    worst
}

#[test]
fn a_batched_step_gives_each_session_what_it_gets_alone() {
    for arch in [SynthArch::Mistral, SynthArch::Mixtral] {
        for ty in [SynthType::Q8_0, SynthType::Q4_K_M] {
            for cache in [CacheType::F32, CacheType::F16] {
                let m = model(arch, ty, cache);
                let alone = run_script(&m, &script(), false);
                let batched = run_script(&m, &script(), true);
                let what = format!("{arch:?} {ty:?} cache {}", cache.name());
                let worst = compare(&alone, &batched, batch_tolerance(ty), &what);
                eprintln!("{what}: worst relative difference {worst:e}");
                // Non-trivial: the sessions differ from each other.
                assert_ne!(alone[0].last(), alone[2].last());
            }
        }
    }
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(n),
        ignore_eos: true,
        ..SamplingParams::greedy()
    }
}

/// Ids and log-probabilities of a greedy generation in a session of its own.
fn alone(model: &Model, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let mut s = model.new_session();
    let g = s
        .generate_with(
            prompt,
            &greedy(n),
            GenerateOptions {
                logprobs: Some(0),
                ..GenerateOptions::default()
            },
        )
        .unwrap();
    let toks: Vec<_> = g.map(|t| t.unwrap()).collect();
    (
        toks.iter().map(|t| t.id).collect(),
        toks.iter()
            .map(|t| t.logprob.as_ref().unwrap().logprob)
            .collect(),
    )
}

fn request(prompt: Vec<u32>, n: usize) -> Request {
    Request {
        prompt,
        params: greedy(n),
        options: GenerateOptions {
            logprobs: Some(0),
            ..GenerateOptions::default()
        },
    }
}

/// Drains a finished request: ids, log-probabilities and the last event.
fn collect(h: &RequestHandle) -> (Vec<u32>, Vec<f32>, Event) {
    let (mut ids, mut lps) = (Vec::new(), Vec::new());
    loop {
        match h.try_recv().expect("the request ended with Done or Error") {
            Event::Token(t) => {
                ids.push(t.id);
                lps.push(t.logprob.map_or(f32::NAN, |l| l.logprob));
            }
            Event::ContextShift(_) => {}
            end => return (ids, lps, end),
        }
    }
}

#[test]
fn the_scheduler_streams_each_request_what_it_generates_alone() {
    let m = model(SynthArch::Mistral, SynthType::Q4_K_M, CacheType::F32);
    // Five requests, three at a time, eight tokens a step: prompts are
    // prefilled in chunks between decoding steps, requests queue and join
    // as others finish.
    let mut sched = Scheduler::new(
        m.clone(),
        SchedulerOptions {
            max_sessions: 3,
            max_batch_tokens: 8,
            kv_budget_bytes: None,
        },
    )
    .unwrap();
    let cases: Vec<(Vec<u32>, usize)> = (0..5)
        .map(|i| (tokens(300, 5 + 7 * i, 40 + i as u64), 4 + 3 * i))
        .collect();
    let handles: Vec<_> = cases
        .iter()
        .map(|(p, n)| sched.submit(request(p.clone(), *n)))
        .collect();
    let mut most = 0;
    let mut steps = 0;
    while !sched.is_idle() {
        let r = sched.step().unwrap();
        assert!(r.prefill_tokens + r.decode_tokens <= 8, "{r:?}");
        most = most.max(r.running);
        steps += 1;
        assert!(steps < 1000);
    }
    assert!(most <= 3);
    for ((prompt, n), h) in cases.iter().zip(&handles) {
        let (ids, lps, end) = collect(h);
        let (want_ids, want_lps) = alone(&m, prompt, *n);
        // The weight products of a chunked prefill are the bits of one batch
        // (`batch_tolerance`), but the attention kernel takes its form by a
        // tile's query rows (register-tiled over the rows from 2 vectors'
        // worth, else over the head dimension), so a prompt cut into chunks
        // of 8 can round differently from the same prompt in one step: the
        // same tokens, log-probabilities to f32 rounding.
        assert_eq!(ids, want_ids, "prompt of {}", prompt.len());
        for (a, b) in lps.iter().zip(&want_lps) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        match end {
            Event::Done { reason, stats } => {
                assert_eq!(reason, FinishReason::MaxTokens);
                assert_eq!(stats.generated_tokens, *n);
                assert_eq!(stats.prompt_tokens, prompt.len());
            }
            e => panic!("{e:?}"),
        }
    }
}

#[test]
fn cancelling_stops_a_request_during_its_prefill_and_spares_the_others() {
    let m = model(SynthArch::Mistral, SynthType::Q8_0, CacheType::F16);
    let mut sched = Scheduler::new(
        m.clone(),
        SchedulerOptions {
            max_sessions: 2,
            max_batch_tokens: 16,
            kv_budget_bytes: None,
        },
    )
    .unwrap();
    let long = sched.submit(request(tokens(300, 200, 1), 5));
    let short_prompt = tokens(300, 6, 2);
    let short = sched.submit(request(short_prompt.clone(), 6));
    sched.step().unwrap();
    sched.step().unwrap();
    long.cancel();
    while !sched.is_idle() {
        sched.step().unwrap();
    }
    let (ids, _, end) = collect(&long);
    assert!(ids.is_empty(), "no token before the prompt was done");
    assert!(matches!(
        end,
        Event::Done {
            reason: FinishReason::Cancelled,
            ..
        }
    ));
    let (ids, _, _) = collect(&short);
    assert_eq!(ids, alone(&m, &short_prompt, 6).0);
    // A dropped handle cancels too: the scheduler goes idle without running it out.
    let h = sched.submit(request(tokens(300, 8, 3), 10_000));
    sched.step().unwrap();
    drop(h);
    sched.step().unwrap();
    assert!(sched.is_idle());
}

#[test]
fn the_kv_budget_bounds_what_runs_and_refuses_what_never_fits() {
    let m = model_ctx(SynthArch::Mistral, SynthType::Q8_0, CacheType::F16, 1024);
    // Each request below may take 20 positions: one page of 256 slots.
    let page = m.kv_cache_bytes_for(20);
    let mut sched = Scheduler::new(
        m.clone(),
        SchedulerOptions {
            max_sessions: 8,
            max_batch_tokens: 64,
            kv_budget_bytes: Some(2 * page),
        },
    )
    .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| sched.submit(request(tokens(300, 10, i), 10)))
        .collect();
    while !sched.is_idle() {
        let r = sched.step().unwrap();
        assert!(r.running <= 2, "{r:?}");
        assert!(sched.kv_cache_bytes() <= 2 * page);
    }
    for h in &handles {
        assert!(matches!(collect(h).2, Event::Done { .. }));
    }
    // A request that could outgrow the whole budget (610 positions: three
    // pages) is refused at once.
    let big = sched.submit(request(tokens(300, 10, 9), 600));
    sched.step().unwrap();
    match collect(&big).2 {
        Event::Error(e) => assert!(e.to_string().contains("budget"), "{e}"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_follow_up_request_reuses_the_context_of_the_previous_turn() {
    let m = model(SynthArch::Mistral, SynthType::Q8_0, CacheType::F32);
    let mut sched = Scheduler::new(m.clone(), SchedulerOptions::default()).unwrap();
    let prompt = tokens(300, 12, 5);
    let first = sched.submit(request(prompt.clone(), 5));
    sched.run_until_idle().unwrap();
    let (ids, _, _) = collect(&first);
    let next: Vec<u32> = [&prompt[..], &ids[..], &[7, 8, 9]].concat();
    let second = sched.submit(request(next.clone(), 4));
    sched.run_until_idle().unwrap();
    let (ids2, _, end) = collect(&second);
    match end {
        // Everything but the last sampled token (never fed) was cached.
        Event::Done { stats, .. } => assert_eq!(stats.reused_tokens, prompt.len() + 4),
        e => panic!("{e:?}"),
    }
    assert_eq!(ids2, alone(&m, &next, 4).0);
}

/// `fresh_context`: the same prompt again runs whole in an empty context
/// and gives bit for bit what it gave the first time, where the reused
/// context (the last prompt token run alone) may round differently.
#[test]
fn a_fresh_context_request_reuses_nothing_and_repeats_exactly() {
    let m = model(SynthArch::Mistral, SynthType::Q4_K_M, CacheType::F16);
    let mut sched = Scheduler::new(m.clone(), SchedulerOptions::default()).unwrap();
    let prompt = tokens(40, 12, 9);
    let run = |sched: &mut Scheduler, fresh: bool| {
        let mut r = request(prompt.clone(), 6);
        r.options.fresh_context = fresh;
        let h = sched.submit(r);
        sched.run_until_idle().unwrap();
        let (ids, lps, end) = collect(&h);
        match end {
            Event::Done { stats, .. } => (ids, lps, stats.reused_tokens),
            e => panic!("{e:?}"),
        }
    };
    let (ids, lps, reused) = run(&mut sched, true);
    assert_eq!(reused, 0);
    let (ids2, lps2, reused2) = run(&mut sched, true);
    assert_eq!(
        reused2, 0,
        "a fresh-context request reused a cached context"
    );
    assert_eq!((ids2, lps2), (ids, lps));
    // Without it, the cached prompt is reused (all but its last token).
    let (_, _, reused3) = run(&mut sched, false);
    assert_eq!(reused3, prompt.len() - 1);
}

#[test]
fn bad_requests_end_with_an_error_and_the_scheduler_goes_on() {
    let m = model(SynthArch::Mistral, SynthType::Q8_0, CacheType::F16);
    let mut sched = Scheduler::new(m.clone(), SchedulerOptions::default()).unwrap();
    let empty = sched.submit(request(Vec::new(), 3));
    let out_of_range = sched.submit(request(vec![1, 5000], 3));
    let too_long = sched.submit(request(tokens(300, 300, 1), 3));
    let fine = sched.submit(request(tokens(300, 4, 1), 3));
    sched.run_until_idle().unwrap();
    for (h, what) in [
        (&empty, "empty"),
        (&out_of_range, "5000"),
        (&too_long, "300"),
    ] {
        match collect(h).2 {
            Event::Error(e) => assert!(e.to_string().contains(what), "{e}"),
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(collect(&fine).0.len(), 3);
    for (sessions, tokens) in [(0, 512), (8, 4)] {
        assert!(matches!(
            Scheduler::new(
                m.clone(),
                SchedulerOptions {
                    max_sessions: sessions,
                    max_batch_tokens: tokens,
                    kv_budget_bytes: None,
                }
            ),
            Err(ModelError::InvalidOption { .. })
        ));
    }
}

#[test]
fn sessions_on_several_threads_share_one_model() {
    let m = model(SynthArch::Mixtral, SynthType::Q4_K_M, CacheType::F16);
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| tokens(300, 6 + i, 70 + i as u64)).collect();
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&m, p, 8).0).collect();
    let got: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                let m = m.clone();
                s.spawn(move || alone(&m, p, 8).0)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(got, want);
}

#[test]
fn the_engine_serves_requests_submitted_from_several_threads() {
    let m = model(SynthArch::Mistral, SynthType::Q4_K_M, CacheType::F16);
    let engine = Arc::new(
        Engine::start(
            m.clone(),
            SchedulerOptions {
                max_sessions: 3,
                ..SchedulerOptions::default()
            },
        )
        .unwrap(),
    );
    let prompts: Vec<Vec<u32>> = (0..5)
        .map(|i| tokens(300, 4 + 3 * i, 90 + i as u64))
        .collect();
    let got: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                let engine = engine.clone();
                s.spawn(move || {
                    let h = engine.submit(request(p.clone(), 6));
                    let mut ids = Vec::new();
                    for e in h {
                        match e {
                            Event::Token(t) => ids.push(t.id),
                            Event::Done { .. } => break,
                            e => panic!("{e:?}"),
                        }
                    }
                    ids
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (p, ids) in prompts.iter().zip(got) {
        assert_eq!(ids, alone(&m, p, 6).0);
    }
    let st = engine.status();
    assert_eq!(st.running, 0);
    assert_eq!(st.generated_tokens, 5 * 6, "{st:?}");
}
