//! The generation side on a real (tiny, synthetic) transformer through the public
//! `Model` / `Session` API: greedy generation equals a recompute-everything loop
//! (the same forward pass with a fresh cache every step: a check of the cache,
//! not an independent reference; `reference.rs` holds the forward itself to a
//! naive one), a prompt that extends the KV cache gives the same tokens as a
//! fresh session, the context limit, and chat-prompt BOS handling.

use mistral_gguf::GgufFile;
use mistral_transformer::synth::{
    default_vocab, write_synth, SynthArch, SynthPreset, SynthSpec, SynthType,
};
use mistral_transformer::{
    CacheType, CancelToken, FinishReason, GenerateOptions, LoadOptions, Message, Model, ModelError,
    SamplingParams, Session,
};

/// A 2-layer, 256-wide Mistral with F32 weights and the first 300 tokens of the
/// synthetic models' generated vocabulary.
fn tiny_file(sliding_window: Option<usize>) -> GgufFile {
    let mut spec = SynthSpec::preset(SynthArch::Mistral, SynthPreset::Tiny);
    spec.ftype = SynthType::F32;
    spec.vocab_size = Some(300);
    spec.seed = 11;
    spec.sliding_window = sliding_window;
    let vocab = default_vocab().unwrap();
    let mut bytes = Vec::new();
    write_synth(&spec, vocab.metadata(), &mut bytes, &|_| {}).unwrap();
    GgufFile::from_bytes(bytes, "tiny").unwrap()
}

/// f32 caches (exact), no context shift (the context limit is tested).
fn exact() -> LoadOptions {
    LoadOptions {
        cache_type_k: CacheType::F32,
        cache_type_v: CacheType::F32,
        context_shift: false,
        ..LoadOptions::default()
    }
}

fn session(file: &GgufFile, opts: LoadOptions) -> Session {
    Model::from_gguf(file, opts).unwrap().new_session()
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding the slow way: every step resets the model and runs the whole
/// sequence again (no KV-cache reuse, no sampler), until EOS or `n` tokens.
fn naive_greedy(file: &GgufFile, prompt: &[u32], n: usize, eos: u32) -> Vec<u32> {
    let model = Model::from_gguf(file, exact()).unwrap();
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < n {
        let logits = model.new_session().forward(&seq, 1).unwrap();
        let id = argmax(&logits);
        out.push(id);
        if id == eos {
            break;
        }
        seq.push(id);
    }
    out
}

fn ids(g: mistral_transformer::Generation<'_>) -> Vec<u32> {
    g.map(|t| t.unwrap().id).collect()
}

#[test]
fn greedy_generation_matches_a_recompute_everything_loop() {
    let file = tiny_file(None);
    let mut m = session(&file, exact());
    let eos = m.model().tokenizer().eos_id().unwrap();
    let prompt = m.model().encode_prompt("Hello there, how are").unwrap();
    let params = SamplingParams {
        max_tokens: Some(12),
        ..SamplingParams::greedy()
    };
    let got = ids(m.generate_tokens(&prompt, &params).unwrap());
    assert_eq!(got, naive_greedy(&file, &prompt, 12, eos));
    assert!(!got.is_empty());
}

#[test]
fn extending_the_cache_gives_the_same_tokens_as_a_fresh_model() {
    let file = tiny_file(None);
    let params = SamplingParams {
        max_tokens: Some(6),
        ..SamplingParams::greedy()
    };
    let mut a = session(&file, exact());
    let prompt = a.model().encode_prompt("Once upon a time").unwrap();
    let first = ids(a.generate_tokens(&prompt, &params).unwrap());
    // Second turn: the first prompt, the answer, and more text.
    let extra = a
        .model()
        .tokenizer()
        .encode(" and then", false, false)
        .unwrap();
    let second_prompt = [&prompt[..], &first[..], &extra[..]].concat();
    let g = a.generate_tokens(&second_prompt, &params).unwrap();
    let reused = g.stats().reused_tokens;
    let second = ids(g);
    // All but the last answer token (sampled, never fed) were already in the cache.
    assert_eq!(reused, prompt.len() + first.len() - 1);

    let mut b = session(&file, exact());
    let g = b.generate_tokens(&second_prompt, &params).unwrap();
    assert_eq!(g.stats().reused_tokens, 0);
    assert_eq!(second, ids(g));
}

#[test]
fn a_prompt_that_departs_from_the_context_reuses_their_common_start() {
    let file = tiny_file(None);
    let params = SamplingParams {
        max_tokens: Some(5),
        ..SamplingParams::greedy()
    };
    let mut a = session(&file, exact());
    let first = a
        .model()
        .encode_prompt("Once upon a time there was")
        .unwrap();
    ids(a.generate_tokens(&first, &params).unwrap());
    // Shares the first 4 tokens with the context, then goes its own way.
    let mut second = first[..4].to_vec();
    second.extend(
        a.model()
            .tokenizer()
            .encode(" a cat", false, false)
            .unwrap(),
    );
    let g = a.generate_tokens(&second, &params).unwrap();
    assert_eq!(g.stats().reused_tokens, 4);
    let got = ids(g);
    let mut b = session(&file, exact());
    assert_eq!(got, ids(b.generate_tokens(&second, &params).unwrap()));
    // The same prompt again keeps all but its last token.
    let g = a.generate_tokens(&second, &params).unwrap();
    assert_eq!(g.stats().reused_tokens, second.len() - 1);
    assert_eq!(ids(g), got);
}

#[test]
fn the_context_limits_prompt_and_generation_unless_the_cache_rolls() {
    let file = tiny_file(None);
    let mut m = session(
        &file,
        LoadOptions {
            ctx_size: Some(16),
            ..exact()
        },
    );
    assert_eq!(m.model().config().cache.max_positions(), Some(16));
    let long: Vec<u32> = (0..17).map(|i| 10 + i).collect();
    match m.generate_tokens(&long, &SamplingParams::greedy()) {
        Err(ModelError::PromptTooLong {
            prompt_tokens: 17,
            context: 16,
        }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a 17-token prompt fit a 16-token context"),
    }
    let prompt = &long[..10];
    let mut g = m
        .generate_tokens(prompt, &SamplingParams::greedy())
        .unwrap();
    let n = g.by_ref().count();
    match g.finish_reason() {
        // Six tokens fill the cache, a seventh comes from the last logits.
        Some(FinishReason::ContextFull) => assert_eq!(n, 7),
        Some(FinishReason::EndOfGeneration) => assert!(n <= 7),
        r => panic!("unexpected finish {r:?}"),
    }

    // With a sliding window the cache is a rolling buffer: no limit.
    let mut w = session(
        &file,
        LoadOptions {
            ctx_size: Some(16),
            sliding_window: Some(8),
            ..exact()
        },
    );
    assert_eq!(w.model().config().cache.max_positions(), None);
    let params = SamplingParams {
        max_tokens: Some(40),
        ..SamplingParams::greedy()
    };
    let mut g = w.generate_tokens(prompt, &params).unwrap();
    let n = g.by_ref().count();
    assert!(
        n == 40 || g.finish_reason() == Some(FinishReason::EndOfGeneration),
        "{n} tokens, {:?}",
        g.finish_reason()
    );
}

#[test]
fn chat_prompts_start_with_one_bos() {
    let file = tiny_file(None);
    let m = Model::from_gguf(&file, LoadOptions::default()).unwrap();
    let bos = m.tokenizer().bos_id().unwrap();
    let rendered = m
        .chat_template()
        .render(&[Message::user("Hi")], true)
        .unwrap();
    assert!(rendered.starts_with("<s>"), "{rendered:?}");
    let ids = m.encode_chat(&[Message::user("Hi")]).unwrap();
    assert_eq!(ids[0], bos);
    assert_ne!(ids[1], bos, "duplicated BOS: {ids:?}");
    // A raw prompt gets the BOS the model asks for, once, even if written out.
    assert_eq!(m.encode_prompt("Hi").unwrap()[0], bos);
    let written = m.encode_prompt("<s>Hi").unwrap();
    assert_eq!(written, m.encode_prompt("Hi").unwrap());
}

#[test]
fn load_errors_name_the_file() {
    let err = Model::load("/nonexistent/tiny.gguf", LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tiny.gguf"), "{err}");
    let bad = SamplingParams {
        top_p: 0.0,
        ..Default::default()
    };
    let file = tiny_file(None);
    let mut m = session(&file, LoadOptions::default());
    let err = m.generate("Hi", &bad).err().unwrap();
    assert!(err.to_string().contains("top-p"), "{err}");
}

#[test]
fn a_cancel_token_stops_a_prompt_between_chunks_and_a_generation_between_tokens() {
    let file = tiny_file(None);
    let mut a = session(&file, exact());
    let params = SamplingParams {
        max_tokens: Some(50),
        ignore_eos: true,
        ..SamplingParams::greedy()
    };
    let cancel = CancelToken::new();
    let opts = |c: &CancelToken| GenerateOptions {
        cancel: Some(c.clone()),
        ..GenerateOptions::default()
    };
    // Cancelled before the prompt: nothing runs.
    cancel.cancel();
    let prompt = a.model().encode_prompt("Once upon a time").unwrap();
    match a.generate_with(&prompt, &params, opts(&cancel)) {
        Err(ModelError::Cancelled) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a cancelled prompt ran"),
    }
    assert_eq!(a.position(), 0);
    // Cancelled after three tokens: the iterator ends, the reason says why.
    let cancel = CancelToken::new();
    let mut g = a.generate_with(&prompt, &params, opts(&cancel)).unwrap();
    for _ in 0..3 {
        g.next().unwrap().unwrap();
    }
    cancel.cancel();
    assert!(g.next().is_none());
    assert_eq!(g.finish_reason(), Some(FinishReason::Cancelled));
    assert_eq!(g.stats().generated_tokens, 3);
}
