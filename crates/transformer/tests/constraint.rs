//! Structured output on the real SmolLM2 (byte-level BPE): what comes out
//! under a constraint, sampled at temperature 1 so that the constraint and
//! not the model keeps it valid, is checked by independent matchers (the
//! `regex` crate, serde_json, a hand-written recognizer); bad constraints
//! are errors before anything runs.

mod common;

use mistral_test_support::smollm2_path;
use mistral_transformer::{
    Constraint, FinishReason, GenerateOptions, LoadOptions, Message, Model, ModelError,
};

fn model() -> Model {
    Model::load(smollm2_path(), LoadOptions::default()).unwrap()
}

/// Text and finish reason of one constrained chat answer.
fn generate(
    model: &Model,
    prompt: &str,
    c: &Constraint,
    seed: u64,
    n: usize,
) -> (String, FinishReason) {
    let ids = model.encode_chat(&[Message::user(prompt)]).unwrap();
    let params = common::unfiltered(seed, n);
    let opts = GenerateOptions {
        processor: Some(Box::new(model.constraint(c).unwrap())),
        ..GenerateOptions::default()
    };
    let mut s = model.new_session();
    let mut g = s.generate_with(&ids, &params, opts).unwrap();
    let mut text = String::new();
    for t in g.by_ref() {
        text.push_str(&t.unwrap().text);
    }
    (text, g.finish_reason().unwrap())
}

#[test]
fn regex_outputs_always_match_and_end_where_the_regex_does() {
    let m = model();
    let cases = [
        ("Is the sky blue? Answer yes or no.", r"yes|no"),
        ("Give a date.", r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
        ("A phone number?", r"\+[1-9][0-9]{1,2} [0-9]{3}-[0-9]{4}"),
        (
            "Name a color.",
            r"(red|green|blue|yellow)( and (red|green|blue|yellow))?",
        ),
        ("Write a word.", r"[a-z]{3,8}"),
    ];
    for (prompt, rx) in cases {
        let check = regex::Regex::new(&format!("^(?:{rx})$")).unwrap();
        for seed in 0..4 {
            let (text, reason) = generate(&m, prompt, &Constraint::Regex(rx.into()), seed, 40);
            assert!(check.is_match(&text), "{rx:?}, seed {seed}: {text:?}");
            // Every match of these is shorter than 40 tokens: it ended by
            // choice (end of generation only where the regex can end).
            assert_eq!(reason, FinishReason::EndOfGeneration, "{rx:?}: {text:?}");
        }
    }
}

/// Balanced brackets of two kinds, the recognizer the grammar's outputs are
/// held against.
fn balanced(s: &str) -> bool {
    let mut stack = Vec::new();
    for c in s.chars() {
        match c {
            '(' | '[' => stack.push(c),
            ')' => {
                if stack.pop() != Some('(') {
                    return false;
                }
            }
            ']' => {
                if stack.pop() != Some('[') {
                    return false;
                }
            }
            _ => return false,
        }
    }
    stack.is_empty() && !s.is_empty()
}

#[test]
fn lark_grammar_outputs_always_parse() {
    let m = model();
    let list = "start: item (\", \" item)*\nitem: /[a-z]{1,8}/\n";
    let check = regex::Regex::new("^[a-z]{1,8}(, [a-z]{1,8})*$").unwrap();
    // What a cut-off output (max_tokens) may be: a prefix of a match.
    let prefix = regex::Regex::new("^[a-z]{1,8}(, [a-z]{1,8})*(,( [a-z]{0,8})?)?$").unwrap();
    let nested = "start: x+\nx: \"(\" x* \")\" | \"[\" x* \"]\"\n";
    for seed in 0..4 {
        let (text, reason) = generate(
            &m,
            "List some fruits.",
            &Constraint::Lark(list.into()),
            seed,
            48,
        );
        if reason == FinishReason::EndOfGeneration {
            assert!(check.is_match(&text), "seed {seed}: {text:?}");
        } else {
            assert!(prefix.is_match(&text), "seed {seed}: {text:?}");
        }
        let (text, reason) = generate(&m, "Brackets:", &Constraint::Lark(nested.into()), seed, 24);
        if reason == FinishReason::EndOfGeneration {
            assert!(balanced(&text), "seed {seed}: {text:?}");
        } else {
            // Cut off by max_tokens: a prefix of a balanced text.
            assert!(
                text.chars().all(|c| "()[]".contains(c)),
                "seed {seed}: {text:?}"
            );
        }
    }
}

#[test]
fn json_outputs_parse() {
    let m = model();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "legs": {"type": "integer", "minimum": 0, "maximum": 8},
            "tags": {"type": "array", "items": {"enum": ["wild", "pet", "farm"]}, "maxItems": 3}
        },
        "required": ["name", "legs", "tags"],
        "additionalProperties": false
    });
    for seed in 0..4 {
        let (text, _) = generate(&m, "An animal as JSON.", &Constraint::Json, seed, 64);
        let v: Result<serde_json::Value, _> = serde_json::from_str(&text);
        // Cut off by max_tokens is the one way to be incomplete.
        if let Err(e) = v {
            assert!(e.is_eof(), "seed {seed}: {text:?}: {e}");
        }
        let (text, reason) = generate(
            &m,
            "An animal as JSON.",
            &Constraint::JsonSchema(schema.clone()),
            seed,
            80,
        );
        assert_eq!(reason, FinishReason::EndOfGeneration, "{text:?}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 3, "{text}");
        assert!(o["name"].as_str().unwrap().chars().count() <= 12, "{text}");
        assert!((0..=8).contains(&o["legs"].as_i64().unwrap()), "{text}");
        let tags = o["tags"].as_array().unwrap();
        assert!(
            tags.len() <= 3
                && tags
                    .iter()
                    .all(|t| ["wild", "pet", "farm"].contains(&t.as_str().unwrap())),
            "{text}"
        );
        // Compact: no whitespace beyond the separators.
        assert!(!text.contains("  ") && !text.contains('\n'), "{text:?}");
    }
}

#[test]
fn bad_constraints_are_clear_errors() {
    let m = model();
    let err = |c: Constraint| match m.constraint(&c) {
        Err(ModelError::InvalidConstraint(e)) => e,
        Err(e) => panic!("{c:?}: other error {e}"),
        Ok(_) => panic!("{c:?} was accepted"),
    };
    let e = err(Constraint::Lark("start: \"a\" start".into()));
    assert!(e.contains("cannot end"), "{e}");
    let e = err(Constraint::Lark(String::new()));
    assert!(e.contains("no start rule"), "{e}");
    let e = err(Constraint::Regex("(".into()));
    assert!(e.contains("unclosed group") && !e.contains('\n'), "{e}");
    let e = err(Constraint::Regex(r"[^\x00-\x{10FFFF}]".into()));
    assert!(e.contains("matches no text"), "{e}");
    let e = err(Constraint::JsonSchema(
        serde_json::json!({"type": "integer", "minimum": 5, "maximum": 3}),
    ));
    assert!(e.contains("Unsatisfiable"), "{e}");
    let e = err(Constraint::JsonSchema(
        serde_json::json!({"type": "object", "if": {}, "then": {}}),
    ));
    assert!(e.contains("if") && e.contains("then"), "{e}");
}
