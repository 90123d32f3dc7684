//! 300 random texts (ASCII noise, code points from many scripts and emoji,
//! GPL words with odd whitespace) encoded by SentencePiece itself with
//! Mistral's v1 and v3 tokenizer files (tests/data/gen_spm_random.py).

mod common;

use common::*;

#[test]
fn random_texts_match_sentencepiece() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/spm_random.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    for (file, cases) in data.as_object().unwrap() {
        let tok = match file.as_str() {
            "ggml-vocab-mistral-v1.gguf" => mistral_v1(),
            "ggml-vocab-mistral-v3.gguf" => mistral_v3(),
            other => panic!("unexpected vocab {other}"),
        };
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let expected: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect();
            let got = tok.encode(text, false, false).unwrap();
            if got != expected {
                failures.push(format!(
                    "{file} {text:?}\n  expected {expected:?}\n  got      {got:?}"
                ));
            } else if tok.decode(&got).unwrap() != text {
                failures.push(format!("{file} {text:?} does not decode back"));
            }
            n += 1;
        }
    }
    assert_eq!(n, 600);
    assert!(
        failures.is_empty(),
        "{} of {n} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
