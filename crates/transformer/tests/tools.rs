//! Function calling round trip on a random-weight model with Mistral's v3
//! vocabulary and chat format: the tools rendered into the prompt, the
//! constraint forcing a call (`[TOOL_CALLS]` then a JSON list), the answer
//! read back as calls whose names and arguments fit the tools. Sampled at
//! temperature 1: random weights would never call a tool on their own.

mod common;

use mistral_gguf::GgufFile;
use mistral_test_support::vocab_path;
use mistral_transformer::synth::{write_synth, SynthArch, SynthPreset, SynthSpec, SynthType};
use mistral_transformer::{
    parse_tool_calls, tool_call_constraint, FinishReason, GenerateOptions, LoadOptions, Message,
    Model, ToolChoice,
};
use serde_json::{json, Value};

fn v3_model() -> Model {
    let vocab = GgufFile::open(vocab_path("ggml-vocab-mistral-v3.gguf")).unwrap();
    let mut spec = SynthSpec::preset(SynthArch::Mistral, SynthPreset::Tiny);
    spec.ftype = SynthType::F32;
    spec.seed = 11;
    let mut bytes = Vec::new();
    write_synth(&spec, vocab.metadata(), &mut bytes, &|_| {}).unwrap();
    let file = GgufFile::from_bytes(bytes, "synthetic v3").unwrap();
    Model::from_gguf(&file, LoadOptions::default()).unwrap()
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "add", "description": "Add two integers.",
            "parameters": {"type": "object", "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 99},
                "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["a", "b"], "additionalProperties": false}}}
    ])
}

/// Checks one call against the tools above (an independent reading of
/// their schemas).
fn check_call(name: &str, args: &Value) {
    let o = args
        .as_object()
        .unwrap_or_else(|| panic!("arguments not an object: {args}"));
    match name {
        "get_weather" => {
            assert_eq!(o.len(), 2, "{args}");
            assert!(o["city"].as_str().unwrap().chars().count() <= 12, "{args}");
            assert!(["c", "f"].contains(&o["unit"].as_str().unwrap()), "{args}");
        }
        "add" => {
            assert_eq!(o.len(), 2, "{args}");
            for k in ["a", "b"] {
                assert!((0..=99).contains(&o[k].as_i64().unwrap()), "{args}");
            }
        }
        other => panic!("unknown tool {other}"),
    }
}

#[test]
fn a_forced_call_renders_generates_and_parses() {
    let m = v3_model();
    let tok = m.tokenizer();
    let tools = tools();
    let messages = [Message::user("What is the weather in Paris?")];
    let prompt = m.encode_chat_with_tools(&messages, &tools).unwrap();
    // [AVAILABLE_TOOLS] (6) before the last [INST] (3).
    assert_eq!(&prompt[..2], &[1, 6]);
    let mut parsed = 0;
    for (choice, seeds) in [
        (ToolChoice::Required, 0..6),
        (ToolChoice::Named("add".into()), 6..9),
    ] {
        for seed in seeds {
            let c = tool_call_constraint(tok, &tools, &choice, seed % 2 == 0).unwrap();
            let opts = GenerateOptions {
                processor: Some(Box::new(m.constraint(&c).unwrap())),
                ..GenerateOptions::default()
            };
            let params = common::unfiltered(seed, 200);
            let mut s = m.new_session();
            let mut g = s.generate_with(&prompt, &params, opts).unwrap();
            let (mut ids, mut text) = (Vec::new(), String::new());
            for t in g.by_ref() {
                let t = t.unwrap();
                ids.push(t.id);
                text.push_str(&t.text);
            }
            let reason = g.finish_reason().unwrap();
            if reason != FinishReason::EndOfGeneration {
                // Random weights may write a long list: the first tokens
                // must still be the call marker.
                assert_eq!(ids[0], 5, "seed {seed}");
                continue;
            }
            assert_eq!(ids[0], 5, "the answer does not start with [TOOL_CALLS]");
            let calls = parse_tool_calls(tok, &ids, &text)
                .unwrap_or_else(|| panic!("seed {seed}: not a call: {text:?}"));
            assert!(!calls.is_empty());
            if seed % 2 == 1 {
                assert_eq!(calls.len(), 1, "one call when not parallel");
            }
            parsed += 1;
            for c in &calls {
                if let ToolChoice::Named(n) = &choice {
                    assert_eq!(&c.name, n);
                }
                check_call(&c.name, &serde_json::from_str(&c.arguments).unwrap());
                assert_eq!(c.id.len(), 9, "Mistral's ids have 9 characters");
            }
            // The call goes back into the conversation.
            let mut next = messages.to_vec();
            next.push(Message::tool_calls(calls.clone()));
            next.push(Message::tool_result(calls[0].id.clone(), "42"));
            let p2 = m.encode_chat_with_tools(&next, &tools).unwrap();
            assert_eq!(
                p2.iter().filter(|&&t| t == 8).count(),
                1,
                "one [TOOL_RESULTS]"
            );
        }
    }
    // Most answers end by themselves (the list closes, then EOS).
    assert!(
        parsed >= 5,
        "only {parsed} of 9 calls completed within 200 tokens"
    );
}

#[test]
fn answers_that_are_not_calls_parse_as_none() {
    let m = v3_model();
    let tok = m.tokenizer();
    // Mistral's format: no [TOOL_CALLS] first, no call.
    assert!(
        parse_tool_calls(tok, &[1234, 5], "[{\"name\": \"add\", \"arguments\": {}}]").is_none()
    );
    let calls = parse_tool_calls(
        tok,
        &[5, 1501],
        " [{\"name\": \"add\", \"arguments\": {\"a\": 1}}]",
    )
    .unwrap();
    assert_eq!(
        (calls[0].name.as_str(), calls[0].arguments.as_str()),
        ("add", "{\"a\":1}")
    );
    assert!(parse_tool_calls(tok, &[5], " not json").is_none());
    assert!(tool_call_constraint(tok, &tools(), &ToolChoice::Named("nope".into()), true).is_err());
    assert!(m
        .encode_chat_with_tools(&[Message::user("x")], &json!([{"type": "function"}]))
        .is_err());
}
