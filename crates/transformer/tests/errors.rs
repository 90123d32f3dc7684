//! Load errors are one clear line naming what is wrong: unsupported architecture
//! (listing the supported ones), missing tensor, unsupported tensor type, bad shape.

mod common;

use common::*;
use mistral_gguf::keys::{self, TensorName};
use mistral_gguf::{GgmlType, TensorSpec, Value};
use mistral_transformer::synth::{SynthArch, SynthType};
use mistral_transformer::{KernelChoice, LoadOptions, Model, ModelError};

fn load_err(file: &mistral_gguf::GgufFile, kernels: KernelChoice) -> ModelError {
    match Model::from_gguf(
        file,
        LoadOptions {
            kernels,
            ..LoadOptions::default()
        },
    ) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    }
}

#[test]
fn load_errors_name_the_problem() {
    let mut spec = tiny(SynthArch::Mistral, SynthType::F32);
    spec.n_layer = 1;
    let file = synth_file(&spec);

    let mut md = file.metadata().clone();
    md.set(keys::GENERAL_ARCHITECTURE, Value::String("gpt2".into()));
    let e = load_err(&rewrite(&file, md, |_| None), KernelChoice::Candle).to_string();
    assert!(
        e.contains("unsupported architecture \"gpt2\"") && e.contains("llama, mistral"),
        "{e}"
    );

    let missing = TensorName::AttnK.layer(0);
    let no_k = rewrite(&file, file.metadata().clone(), |n| {
        (n == missing).then(Vec::new)
    });
    let e = load_err(&no_k, KernelChoice::Candle).to_string();
    assert!(e.contains("missing tensor") && e.contains(&missing), "{e}");

    // IQ4_NL: the native kernels run it, candle cannot.
    let q = TensorName::AttnQ.layer(0);
    let iq = rewrite(&file, file.metadata().clone(), |n| {
        let (info, _) = file.tensor(n).ok()?;
        (n == q).then(|| {
            let spec = TensorSpec::new(n, GgmlType::IQ4_NL, &info.dims);
            let len = spec.n_bytes().unwrap() as usize;
            // Blocks of f16 scale 0 and zero nibbles: valid data.
            vec![(spec, vec![0u8; len])]
        })
    });
    let e = load_err(&iq, KernelChoice::Candle).to_string();
    assert!(
        e.contains(&q) && e.contains("IQ4_NL") && e.contains("not supported"),
        "{e}"
    );
    Model::from_gguf(
        &iq,
        LoadOptions {
            kernels: KernelChoice::Native,
            ..LoadOptions::default()
        },
    )
    .unwrap();

    let bad_shape = rewrite(&file, file.metadata().clone(), |n| {
        let (info, bytes) = file.tensor(n).ok()?;
        (n == TensorName::AttnNorm.layer(0)).then(|| {
            let half = bytes.len() / 2;
            vec![(
                TensorSpec::new(n, info.ggml_type, &[info.dims[0] / 2]),
                bytes[..half].to_vec(),
            )]
        })
    });
    let e = load_err(&bad_shape, KernelChoice::Candle).to_string();
    assert!(
        e.contains("attn_norm") && e.contains("expected [256]"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn loading_reports_progress_up_to_the_whole_file() {
    let file = synth_file(&tiny(SynthArch::Mistral, SynthType::Q8_0));
    let total: u64 = file.tensors().iter().map(|t| t.n_bytes()).sum();
    let mut seen = Vec::new();
    Model::from_gguf_with_progress(&file, LoadOptions::default(), |p| seen.push(p)).unwrap();
    assert!(
        seen.len() >= file.tensors().len() / 2,
        "{} reports",
        seen.len()
    );
    assert!(seen.windows(2).all(|w| w[0].loaded <= w[1].loaded));
    assert!(seen.iter().all(|p| p.total == total));
    assert_eq!(seen.last().map(|p| p.loaded), Some(total));
}
