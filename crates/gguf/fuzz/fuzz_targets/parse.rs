//! Fuzzes the GGUF reader: any input must give `Ok` or `Err`, never a panic, a hang
//! or an allocation out of proportion to the input. An accepted file must also be
//! internally consistent and survive a write/read round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mistral_gguf::{Gguf, GgufFile, GgufWriter, TensorSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec(), "fuzz") else {
        return;
    };
    let header = file.header();
    // Every tensor's data lies inside the input and has the size its type and shape give.
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes(), "{}", t.name);
        assert!(header.data_offset + t.offset + t.n_bytes() <= data.len() as u64);
        assert_eq!(t.offset % header.alignment, 0);
    }
    // Accessors never panic on whatever the metadata holds.
    for (key, value) in file.metadata().iter() {
        let _ = value.to_display_string();
        let _ = file.metadata().get_u64(key);
        let _ = file.metadata().get_f32(key);
        let _ = file.metadata().get_i32_array(key);
    }
    let _ = mistral_gguf::LlamaHparams::from_metadata(file.metadata());

    // Write what was read and read it back: same metadata bytes, same tensors and data
    // (skipped for huge alignments, whose padding alone would be gigabytes).
    if header.alignment > 1 << 16 {
        return;
    }
    let mut w = GgufWriter::new(file.metadata().clone());
    for t in file.tensors() {
        w.add_tensor(TensorSpec::new(&t.name, t.ggml_type, &t.dims));
    }
    let parts: Vec<&[u8]> = file.tensors().iter().map(|t| file.tensor_data(t)).collect();
    let written = w.to_bytes(&parts).expect("an accepted file can be written");
    let again = Gguf::parse(&written, "rewritten").expect("a written file can be read");
    assert_eq!(again.tensors.len(), file.tensors().len());
    for (a, b) in again.tensors.iter().zip(file.tensors()) {
        assert_eq!(
            (&a.name, a.ggml_type, &a.dims),
            (&b.name, b.ggml_type, &b.dims)
        );
        let start = (again.data_offset + a.offset) as usize;
        assert_eq!(
            &written[start..start + a.n_bytes() as usize],
            file.tensor_data(b)
        );
    }
    // Metadata compared through a second write (NaN-safe: bytes, not floats).
    let mut w2 = GgufWriter::new(again.metadata.clone());
    w2.tensors = w.tensors.clone();
    let written2 = w2.to_bytes(&parts).expect("second write");
    assert_eq!(written, written2);
});
