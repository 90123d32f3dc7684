//! `GgufFile::release`: the pages of a mapped tensor leave the process's
//! resident memory, and reading the tensor afterwards gives the same bytes.

use mistral_gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorSpec};

/// Resident kB of the mapping that contains `addr` (Linux `/proc/self/smaps`).
#[cfg(target_os = "linux")]
fn resident_kb(addr: usize) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = head.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a <= addr && addr < b;
                continue;
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("Rss:") {
                return kb.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
    }
    None
}

#[test]
fn released_pages_leave_rss_and_read_back_the_same() {
    let n = 1 << 20; // 4 MiB of f32
    let values: Vec<u8> = (0..n as u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) as f32).to_le_bytes())
        .collect();
    let mut w = GgufWriter::new(Metadata::new());
    w.add_tensor(TensorSpec::new("t", GgmlType::F32, &[n as u64]));
    let bytes = w.to_bytes(&[&values]).unwrap();
    let path =
        std::env::temp_dir().join(format!("mistral-run-release-{}.gguf", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();

    let file = GgufFile::open(&path).unwrap();
    let (_, data) = file.tensor("t").unwrap();
    assert_eq!(data, &values[..]);
    #[cfg(target_os = "linux")]
    let before = resident_kb(data.as_ptr() as usize).unwrap();

    file.release(data);
    #[cfg(target_os = "linux")]
    {
        let after = resident_kb(data.as_ptr() as usize).unwrap();
        // All but the two partial pages at the ends of the tensor are gone.
        assert!(before >= 4000, "tensor resident before: {before} kB");
        assert!(after <= before - 4000, "resident {before} kB -> {after} kB");
    }
    // Reading again maps the same bytes back in.
    assert_eq!(data, &values[..]);
    // Slices that are not of this map are ignored.
    file.release(&values);
    file.release(&[]);
    std::fs::remove_file(&path).ok();

    // A file held in memory: a no-op.
    let mem = GgufFile::from_bytes(bytes, "mem").unwrap();
    let (_, d) = mem.tensor("t").unwrap();
    mem.release(d);
    assert_eq!(d, &values[..]);
}
