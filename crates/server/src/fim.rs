//! Fill-in-the-middle prompts: which control tokens a vocabulary has, and
//! the order its models were trained with.

use mistral_transformer::Tokenizer;

type TokResult<T> = Result<T, mistral_transformer::ModelError>;

/// The control tokens of a fill-in-the-middle prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fim {
    /// `<fim_prefix>` prefix `<fim_suffix>` suffix `<fim_middle>` (StarCoder
    /// vocabularies; llama.cpp's default order).
    Psm { pre: u32, suf: u32, mid: u32 },
    /// BOS `[SUFFIX]` suffix `[PREFIX]` prefix (Mistral's tokenizer v3 and
    /// later, as mistral-common's `encode_fim`).
    Mistral { pre: u32, suf: u32 },
}

impl Fim {
    /// The vocabulary's FIM tokens, if it has a full set.
    pub fn detect(tok: &Tokenizer) -> Option<Fim> {
        let id = |s| tok.token_id(s);
        match (id("<fim_prefix>"), id("<fim_suffix>"), id("<fim_middle>")) {
            (Some(pre), Some(suf), Some(mid)) => Some(Fim::Psm { pre, suf, mid }),
            _ => match (id("[PREFIX]"), id("[SUFFIX]")) {
                (Some(pre), Some(suf)) => Some(Fim::Mistral { pre, suf }),
                _ => None,
            },
        }
    }

    /// The prompt ids for `prefix` and `suffix`; the model writes the middle.
    /// Control tokens written in the texts stay text.
    pub fn prompt(self, tok: &Tokenizer, prefix: &str, suffix: &str) -> TokResult<Vec<u32>> {
        let encode = |t: &str| -> TokResult<Vec<u32>> { Ok(tok.encode(t, false, false)?) };
        let mut ids = Vec::new();
        if tok.adds_bos() {
            ids.extend(tok.bos_id());
        }
        match self {
            Fim::Psm { pre, suf, mid } => {
                ids.push(pre);
                ids.extend(encode(prefix)?);
                ids.push(suf);
                ids.extend(encode(suffix)?);
                ids.push(mid);
            }
            Fim::Mistral { pre, suf } => {
                // The suffix without SentencePiece's dummy-prefix space, as
                // mistral-common's `_encode_infill` (encode "☺" + text and
                // drop the marker's tokens).
                let marker = encode("\u{263A}")?;
                let all = encode(&format!("\u{263A}{suffix}"))?;
                let infill = match all.strip_prefix(marker.as_slice()) {
                    Some(rest) => rest.to_vec(),
                    None => encode(suffix)?,
                };
                ids.push(suf);
                ids.extend(infill);
                ids.push(pre);
                ids.extend(encode(prefix)?);
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(name: &str) -> Tokenizer {
        let path = mistral_test_support::vocab_path(name);
        let file = mistral_gguf::GgufFile::open(&path).unwrap();
        Tokenizer::from_gguf(&file).unwrap()
    }

    /// The ids mistral-common 1.13.1 returns for
    /// `MistralTokenizer.from_file("mistral_instruct_tokenizer_240323.model.v3")
    /// .encode_fim(FIMRequest(prompt=..., suffix=...))` (text form
    /// `<s>[SUFFIX]<0x0A><0x0A>print(add(1,▁2))[PREFIX]▁def▁add(a,▁b):<0x0A>▁▁▁▁return`
    /// and `<s>[SUFFIX]▁▁#▁comment[PREFIX]▁x▁=▁`).
    #[test]
    fn mistral_v3_fim_matches_mistral_common() {
        let tok = tokenizer("ggml-vocab-mistral-v3.gguf");
        let fim = Fim::detect(&tok).unwrap();
        assert_eq!(fim, Fim::Mistral { pre: 11, suf: 13 });
        let ids = fim
            .prompt(&tok, "def add(a, b):\n    return", "\n\nprint(add(1, 2))")
            .unwrap();
        assert_eq!(
            ids,
            [
                1, 13, 781, 781, 2799, 29500, 1756, 29500, 29508, 29493, 29473, 29518, 1511, 11,
                1569, 1735, 29500, 29476, 29493, 1055, 2097, 781, 3055, 1372
            ]
        );
        let ids = fim.prompt(&tok, "x = ", "  # comment").unwrap();
        assert_eq!(ids, [1, 13, 29473, 1190, 5285, 11, 2086, 1095, 29473]);
    }

    #[test]
    fn vocabularies_without_fim_tokens_have_none() {
        assert_eq!(Fim::detect(&tokenizer("ggml-vocab-mistral-v1.gguf")), None);
    }
}
