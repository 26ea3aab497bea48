//! ggml tensor types: ids as stored in GGUF, names, and bytes per block, for every type ggml
//! defines (so a file is parsed, listed and its tensors sized even where floe cannot compute
//! with a type; which types floe runs is the kernels' type table, `floe_kernels::DType`).

/// A ggml element type (its id as stored in GGUF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

/// (id, name, values per block, bytes per block) of every ggml type a GGUF file may hold.
const LAYOUTS: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

#[allow(missing_docs)]
impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q2K: GgmlType = GgmlType(10);
    pub const Q3K: GgmlType = GgmlType(11);
    pub const Q4K: GgmlType = GgmlType(12);
    pub const Q5K: GgmlType = GgmlType(13);
    pub const Q6K: GgmlType = GgmlType(14);
    pub const BF16: GgmlType = GgmlType(30);
    pub const I32: GgmlType = GgmlType(26);
    pub const MXFP4: GgmlType = GgmlType(39);
}

impl GgmlType {
    /// From the id stored in GGUF, if ggml defines it.
    pub fn from_id(id: u32) -> Option<Self> {
        LAYOUTS.iter().any(|l| l.0 == id).then_some(GgmlType(id))
    }

    /// The id stored in GGUF.
    pub fn id(self) -> u32 {
        self.0
    }

    fn layout(self) -> &'static (u32, &'static str, u64, u64) {
        LAYOUTS.iter().find(|l| l.0 == self.0).expect("GgmlType values come from LAYOUTS")
    }

    /// (values per block, bytes per block).
    pub fn block(self) -> (u64, u64) {
        let l = self.layout();
        (l.2, l.3)
    }

    /// Bytes of `n` values, or None if `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let (per, bytes) = self.block();
        if n.is_multiple_of(per) {
            (n / per).checked_mul(bytes)
        } else {
            None
        }
    }

    /// llama.cpp's name of the type.
    pub fn name(self) -> &'static str {
        self.layout().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_kernels::DType;

    #[test]
    fn every_floe_type_has_ggmls_layout_and_name() {
        for d in DType::ALL {
            let g = GgmlType::from_id(d.ggml_id()).expect("a ggml id");
            assert_eq!(g.block(), (d.block_values() as u64, d.block_bytes() as u64), "{d}");
            assert_eq!(g.name(), d.ggml_name(), "{d}");
        }
        assert_eq!(GgmlType::from_id(4), None, "Q4_2 was removed from ggml");
    }
}
