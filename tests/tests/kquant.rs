//! K-quant dequantisation bit for bit against ggml's (../shared/golden/kquant: the raw blocks
//! ggml wrote and gguf-py's dequantisation of them, which equals ggml's `to_float`).

use floe::formats::gguf::GgufFile;
use floe_tests::{golden_dir, Golden};

#[test]
fn k_quant_dequantisation_is_bit_exact_against_ggml() {
    let Some(dir) = golden_dir("kquant") else { return };
    let g = GgufFile::open(&dir.join("kquant-vectors.gguf")).unwrap();
    let reference = Golden::load(&dir, "kquant-dequant.safetensors");
    let mut checked = 0;
    for name in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"] {
        let t = g.tensor(name).unwrap_or_else(|| panic!("tensor {name}"));
        let dtype = floe::formats::gguf::import::dtype_of(t).unwrap();
        let (want, shape) = reference.f32(name);
        assert_eq!(shape, vec![4, 32, 256]);
        let mut got = vec![0.0f32; want.len()];
        dtype.dequantize(g.data(t), &mut got).unwrap();
        let differ = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{name}: {differ} of {} values differ from ggml's bits", want.len());
        // And the quantisation is real: close to the source data, not trivially zero.
        let (src, _) = reference.f32("src");
        let rms = (got.iter().zip(&src).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>()
            / src.len() as f64)
            .sqrt();
        assert!(rms > 1e-5 && rms < 1e-2, "{name}: rms error {rms}");
        checked += 1;
    }
    assert_eq!(checked, 5);
}
