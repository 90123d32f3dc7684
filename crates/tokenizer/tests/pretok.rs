//! The byte-level BPE pre-tokenizers against splits computed with Python's
//! `regex` module (tests/data/gen_pretok_splits.py): the 47 vector inputs plus
//! mixed-case, contraction, digit, whitespace and non-Latin texts, for every
//! supported `tokenizer.ggml.pre`.

use mistral_tokenizer::PreTokenizer;

#[test]
fn splits_match_python_regex() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pretok_splits.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for (name, cases) in data.as_object().unwrap() {
        let pre = PreTokenizer::from_name(Some(name)).unwrap();
        assert_eq!(pre.name(), name);
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let expected: Vec<&str> = case["pieces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert_eq!(pre.split(text).unwrap(), expected, "{name}: {text:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 5 * 57);
}
