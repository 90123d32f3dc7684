//! The streaming decoder against whole-sequence decode on the same ids, and
//! encode/decode round trips on random Unicode text.

mod common;

use common::*;
use mistral_tokenizer::{TokenKind, Tokenizer};
use proptest::prelude::*;

/// Feeds ids one at a time; returns each push's output and the total.
fn stream(tok: &Tokenizer, ids: &[u32]) -> (Vec<Option<String>>, String) {
    let mut dec = tok.stream_decoder();
    let mut pieces = Vec::new();
    let mut all = String::new();
    for &id in ids {
        let p = dec.push(id).unwrap();
        if let Some(s) = &p {
            all.push_str(s);
        }
        pieces.push(p);
    }
    if let Some(s) = dec.finish().unwrap() {
        all.push_str(&s);
    }
    (pieces, all)
}

const TEXTS: &[&str] = &[
    "Hello world",
    " leading space and  double",
    "🦙 llamas 😶‍🌫️ and ✅",
    "កាន់តែពិសេសអាចខលចេញ",
    "Führer 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{10FFFF} 👩‍👩‍👧‍👦",
    "\n\n\ttabs\r\nand lines\n",
    "",
];

#[test]
fn stream_equals_decode_on_real_text() {
    for tok in [mistral_v1(), mistral_v3(), smollm2()] {
        for text in TEXTS {
            let ids = tok.encode(text, true, false).unwrap();
            let whole = tok.decode(&ids).unwrap();
            assert_eq!(&whole, text);
            let (_, streamed) = stream(tok, &ids);
            assert_eq!(streamed, whole, "{text:?} -> {ids:?}");
        }
    }
}

/// A character spelled by byte-fallback tokens comes out whole, only when its
/// last byte arrives.
#[test]
fn byte_fallback_character_is_held_until_complete() {
    let tok = mistral_v1();
    // U+1D518 is not in the vocabulary: four <0xNN> tokens.
    let ids = tok.encode("x𝔘", false, false).unwrap();
    let bytes: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|&i| tok.token_kind(i) == Some(TokenKind::Byte))
        .collect();
    assert_eq!(bytes.len(), 4, "{ids:?}");
    let (pieces, all) = stream(tok, &ids);
    assert_eq!(all, "x𝔘");
    let n = pieces.len();
    assert_eq!(pieces[n - 4..n - 1], [None, None, None]);
    assert_eq!(pieces[n - 1].as_deref(), Some("𝔘"));
    // Byte-level BPE: the emoji's four bytes split over tokens the same way.
    let tok = smollm2();
    let ids = tok.encode("🦙🦙🦙", false, false).unwrap();
    let (pieces, all) = stream(tok, &ids);
    assert_eq!(all, "🦙🦙🦙");
    for p in pieces.iter().flatten() {
        assert!(p.chars().all(|c| c == '🦙'), "{p:?}");
    }
}

/// The first printed token loses SentencePiece's dummy-prefix space, in the
/// stream as in decode; later spaces stay.
#[test]
fn leading_space_handling() {
    let tok = mistral_v1();
    let ids = tok.encode("Hello world", true, false).unwrap();
    let (pieces, _) = stream(tok, &ids);
    assert_eq!(pieces[0], None); // BOS prints nothing
    assert_eq!(pieces[1].as_deref(), Some("Hello"));
    assert_eq!(pieces[2].as_deref(), Some(" world"));
    // A truncated character at the end becomes one U+FFFD, in both.
    let e2 = tok.token_id("<0xE2>").unwrap();
    let mut ids2 = ids.clone();
    ids2.push(e2);
    assert_eq!(tok.decode(&ids2).unwrap(), "Hello world\u{FFFD}");
    assert_eq!(stream(tok, &ids2).1, "Hello world\u{FFFD}");
}

#[test]
fn out_of_range_ids_are_errors() {
    let tok = mistral_v1();
    assert!(tok.decode(&[1, 32000]).is_err());
    assert!(tok.stream_decoder().push(u32::MAX).is_err());
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ a-zA-Z0-9.,'!?\n\t]{0,60}",
        "[ éüßЖж中文🦙😀\u{200D}\u{FE0F}a-z]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_spm(text in arb_text()) {
        for tok in [mistral_v1(), mistral_v3()] {
            let ids = tok.encode(&text, true, false).unwrap();
            prop_assert_eq!(&tok.decode(&ids).unwrap(), &text);
            prop_assert_eq!(&stream(tok, &ids).1, &text);
        }
    }

    #[test]
    fn round_trip_byte_level(text in arb_text()) {
        let tok = smollm2();
        let ids = tok.encode(&text, true, false).unwrap();
        prop_assert_eq!(&tok.decode(&ids).unwrap(), &text);
        prop_assert_eq!(&stream(tok, &ids).1, &text);
    }

    /// Any id sequence, including lone bytes of multi-byte characters.
    #[test]
    fn stream_equals_decode_on_random_ids(ids in prop::collection::vec(prop_oneof![0u32..300, 0u32..32000], 0..40)) {
        let tok = mistral_v1();
        prop_assert_eq!(stream(tok, &ids).1, tok.decode(&ids).unwrap());
    }

    #[test]
    fn stream_equals_decode_on_random_byte_level_ids(ids in prop::collection::vec(0u32..49152, 0..40)) {
        let tok = smollm2();
        prop_assert_eq!(stream(tok, &ids).1, tok.decode(&ids).unwrap());
    }
}
