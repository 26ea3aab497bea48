//! The GGUF types beyond the K-quants (Q4_1, Q5_0, Q5_1, the i-quants, TQ1_0, TQ2_0, and Q2_K /
//! Q3_K files): dequantisation against ggml's arithmetic, and whole models quantised by
//! llama-quantize against llama.cpp's own outputs on the same files.

use std::path::{Path, PathBuf};

use floe::formats::gguf::GgufFile;
use floe::runtime::{Model, Session};
use floe_kernels::DType;

fn fixtures(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(dir)
}

/// The legacy, IQ and TQ types.
const NEW_TYPES: [DType; 14] = [
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Iq4Nl,
    DType::Iq4Xs,
    DType::Iq2Xxs,
    DType::Iq2Xs,
    DType::Iq2S,
    DType::Iq3Xxs,
    DType::Iq3S,
    DType::Iq1S,
    DType::Iq1M,
    DType::Tq1_0,
    DType::Tq2_0,
];

/// Every legacy, IQ and TQ type: random blocks of the type (`tests/fixtures/quant/vectors.gguf`,
/// from `bench/scripts/make_quant_vectors.py`) dequantise bit for bit as gguf-py's reference
/// (ggml's arithmetic) does, and every type the fixture holds is one floe runs.
#[test]
fn quant_vectors_dequantise_like_ggml() {
    let path = fixtures("quant").join("vectors.gguf");
    let g = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut checked = Vec::new();
    for t in g.tensors.iter().filter(|t| !t.name.ends_with(".f32")) {
        let dtype = DType::from_ggml_id(t.ggml_type.id())
            .unwrap_or_else(|| panic!("{} is not a type floe runs", t.name));
        let want = g.tensor(&format!("{}.f32", t.name)).expect("its reference values");
        let want: Vec<u32> = g
            .data(want)
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let bytes = g.data(t).to_vec();
        let mut got = vec![0.0f32; want.len()];
        dtype.dequantize(&bytes, &mut got).unwrap();
        let differ = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != **b).count();
        assert_eq!(differ, 0, "{}: {differ} of {} values differ from ggml", t.name, want.len());
        checked.push(dtype);
    }
    for d in NEW_TYPES {
        assert!(checked.contains(&d), "{d} has no vectors");
    }
}

/// Every legacy, IQ and TQ type and Q2_K, Q3_K: one weight row dotted with quantised
/// activations rounds exactly as llama.cpp's `vec_dot` does (`tests/fixtures/quant/dots.gguf`,
/// from `bench/scripts/make_dot_vectors.py` calling libggml-cpu's AVX2 kernels), bit for bit,
/// on the scalar kernels and on this CPU's best.
#[test]
fn dots_round_like_llama_cpp() {
    use floe_kernels::dot::Isa;
    let path = fixtures("quant").join("dots.gguf");
    let g = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let f32s = |name: String| -> Vec<f32> {
        let t = g.tensor(&name).unwrap_or_else(|| panic!("{name} missing"));
        g.data(t).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    };
    let mut isas = vec![Isa::Scalar];
    isas.extend(Isa::ALL.into_iter().filter(|i| *i != Isa::Scalar && i.supported()));
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for t in g.tensors.iter().filter(|t| !t.name.contains('.')) {
        let dtype = DType::from_ggml_id(t.ggml_type.id())
            .unwrap_or_else(|| panic!("{} is not a type floe runs", t.name));
        let (x, want) = (f32s(format!("{}.x", t.name)), f32s(format!("{}.dot", t.name)));
        let bytes = g.data(t).to_vec();
        let rows = want.len() / (x.len() / t.dims[0] as usize);
        let n = t.dims[0] as usize;
        let row_bytes = bytes.len() / rows;
        for &isa in &isas {
            let mut differ = 0;
            for (k, x) in x.chunks_exact(n).enumerate() {
                for (r, row) in bytes.chunks_exact(row_bytes).enumerate() {
                    let got = floe_kernels::dot_row_on(isa, dtype, row, x).unwrap();
                    differ += usize::from(got.to_bits() != want[k * rows + r].to_bits());
                }
            }
            if differ > 0 {
                failures.push(format!("{} on {}: {differ} of {}", t.name, isa.name(), want.len()));
            }
        }
        checked.push(dtype);
    }
    assert!(failures.is_empty(), "dots that differ from llama.cpp's: {failures:#?}");
    for d in NEW_TYPES.into_iter().chain([DType::Q2K, DType::Q3K]) {
        assert!(checked.contains(&d), "{d} has no dot vectors");
    }
}

/// llama.cpp's outputs on one of `fixtures/iquant/model-<TYPE>.gguf`.
struct LlamaCpp {
    ids: Vec<u32>,
    logits: Vec<f32>,
    vocab: usize,
    gen: Vec<u32>,
    /// The logits that chose each of `gen` (row 0: the last prompt row).
    gen_logits: Vec<f32>,
    /// Per layer, per prompt position then decode step, the experts llama.cpp picked (sorted).
    experts: Vec<Vec<Vec<u32>>>,
    /// The same places' gap between llama.cpp's k-th and (k+1)-th router logit.
    router_gap: Vec<Vec<f32>>,
}

fn llama_cpp(ty: &str) -> LlamaCpp {
    let dir = fixtures("iquant");
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("llamacpp-{ty}.json"))).unwrap(),
    )
    .unwrap();
    let u32s = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let f32s = |name: String| -> Vec<f32> {
        std::fs::read(dir.join(name))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let logits = f32s(format!("llamacpp-{ty}.logits.f32"));
    let gen_logits = f32s(format!("llamacpp-{ty}.gen_logits.f32"));
    let by_layer = info["experts"].as_object().unwrap();
    let experts = (0..by_layer.len())
        .map(|l| by_layer[&l.to_string()].as_array().unwrap().iter().map(u32s).collect())
        .collect();
    let gaps = info["router_gap"].as_object().unwrap();
    let router_gap = (0..gaps.len())
        .map(|l| {
            let g = gaps[&l.to_string()].as_array().unwrap();
            g.iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect();
    LlamaCpp {
        ids: u32s(&info["input_ids"]),
        logits,
        vocab: info["vocab"].as_u64().unwrap() as usize,
        gen: u32s(&info["gen_ids"]),
        gen_logits,
        experts,
        router_gap,
    }
}

/// A router choice llama.cpp made by a smaller margin (its k-th against its (k+1)-th router
/// logit) may go the other way in floe: the two sum in different orders (llama.cpp repacks the
/// Q8_0 / Q6_K tensors of these files into its own GEMV layouts), a last-bit difference now and
/// then flips an activation's rounding, and the flips move these tiny models' router logits by
/// up to about 0.03 (measured: every choice that differs here had a margin of 0.007-0.03).
const ROUTER_MARGIN: f32 = 0.05;

/// What floe gets on the same file, against llama.cpp, over the prompt and the decode steps
/// along llama.cpp's own greedy tokens (so one flip does not change what follows).
#[derive(Debug, Default)]
struct Agreement {
    /// Max |logit diff| over the places before the first expert set that differs from
    /// llama.cpp's (from there on the two run different experts, and later places attend to
    /// that place).
    max_diff: f32,
    /// Places compared (prompt positions and decode steps).
    compared: usize,
    /// Places in all.
    places: usize,
    /// Expert sets that differ where llama.cpp chose by at least [`ROUTER_MARGIN`], and sets
    /// compared (those before the first close choice that went the other way).
    sets_differ: usize,
    sets: usize,
    /// Close choices (not held to llama.cpp's), and how many of those differ.
    close: usize,
    close_differ: usize,
    /// Compared places whose argmax differs though llama.cpp's top-2 gap is over twice the
    /// logits bound (a flip floe's logits within the bound cannot explain).
    argmax_differ: usize,
}

fn top2_gap(row: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::MIN, f32::MIN);
    for &x in row {
        if x > a {
            (a, b) = (x, a);
        } else if x > b {
            b = x;
        }
    }
    a - b
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

fn compare(model: &Model, want: &LlamaCpp) -> Agreement {
    let (t, v) = (want.ids.len(), want.vocab);
    let mut session = Session::recording();
    let prompt = model.forward(&mut session, &want.ids, true).unwrap();
    assert_eq!(prompt.len(), want.logits.len());
    // Floe's logits at every place: each prompt position, then each decode step's.
    let mut rows: Vec<&[f32]> = prompt.chunks_exact(v).collect();
    let mut decoded = Vec::new();
    for &tok in &want.gen[..want.gen.len() - 1] {
        decoded.push(model.forward(&mut session, &[tok], false).unwrap());
    }
    rows.extend(decoded.iter().map(|r| &r[..]));
    let reference: Vec<&[f32]> =
        want.logits.chunks_exact(v).take(t - 1).chain(want.gen_logits.chunks_exact(v)).collect();
    assert_eq!(rows.len(), reference.len());
    let routes = session.routes.unwrap();
    let mut a = Agreement { places: rows.len(), ..Default::default() };
    // Each place's sets, floe's and llama.cpp's, layer by layer.
    let mut sets = Vec::new();
    for place in 0..rows.len() {
        for (layer, per_place) in want.experts.iter().enumerate() {
            // Place p is position p: the prompt, then the decode steps (llama.cpp also routed
            // the last greedy token, which floe does not decode).
            let r = routes.iter().find(|r| r.layer == layer && r.pos == place).unwrap();
            let mut got: Vec<u32> = r.experts.iter().map(|e| e.0 as u32).collect();
            got.sort();
            let close = want.router_gap[layer][place] < ROUTER_MARGIN;
            sets.push((place, layer, got, &per_place[place], close));
        }
    }
    // After a close choice went the other way, floe runs other experts than llama.cpp did, and
    // every later layer and place sees that: sets from there on are not held to llama.cpp's.
    let flip = sets.iter().position(|(_, _, got, want, close)| *close && got != *want);
    let mut first_differ = rows.len();
    for (i, (place, layer, got, want_set, close)) in sets.iter().enumerate() {
        if got != *want_set {
            first_differ = first_differ.min(*place);
        }
        if *close {
            a.close += 1;
            a.close_differ += usize::from(got != *want_set);
            continue;
        }
        if flip.is_some_and(|f| i > f) {
            continue;
        }
        a.sets += 1;
        if got != *want_set {
            a.sets_differ += 1;
            eprintln!(
                "  layer {layer} place {place}: floe {got:?}, llama.cpp {want_set:?} (its router gap {})",
                want.router_gap[*layer][*place]
            );
        }
    }
    for (place, (got, want_row)) in rows.iter().zip(&reference).enumerate().take(first_differ) {
        a.compared += 1;
        a.max_diff = a.max_diff.max(floe_tests::max_abs_diff(got, want_row));
        if argmax(got) != argmax(want_row) && top2_gap(want_row) > 2.0 * LLAMACPP_LOGITS_TOL {
            a.argmax_differ += 1;
            eprintln!(
                "  place {place}: argmax differs, llama.cpp's top-2 gap {}",
                top2_gap(want_row)
            );
        }
    }
    a
}

/// The `qwen3_moe_k256` golden (rows 256 wide) quantised by llama-quantize (with an importance
/// matrix from llama-imatrix) to every type, run in place and packed, over the prompt and 15
/// decode steps along llama.cpp's greedy tokens: every expert set equal to llama.cpp's where
/// its router chose by at least [`ROUTER_MARGIN`], logits within the K-quant bound up to the
/// first expert set that differs (at least half of all places), and no argmax flip that the
/// bound cannot explain.
#[test]
fn every_quant_type_matches_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for ty in [
        "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
        "TQ1_0", "TQ2_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K_S", "Q3_K_S",
    ] {
        let file = fixtures("iquant").join(format!("model-{ty}.gguf"));
        let want = llama_cpp(ty);
        let m = floe::formats::source::open_model(&file, false, None).unwrap();
        let experts = floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap();
        let direct = Model::new(m.config, m.dense, Box::new(experts), 2).unwrap();
        let out = tmp.path().join(ty);
        floe::formats::gguf::pack_gguf(&file, &out, None, &mut |_, _| {}).unwrap();
        let packed = floe::formats::packed::PackedModel::open(&out, true).unwrap();
        let packed = floe_tests::load(&packed, 2);
        for (how, model) in [("in place", &direct), ("packed", &packed)] {
            let a = compare(model, &want);
            eprintln!("{ty} ({how}): {a:?}");
            if a.sets_differ > 0
                || a.argmax_differ > 0
                || a.max_diff > logits_bound(ty)
                || a.compared < a.places / 2
            {
                failures.push(format!("{ty} ({how})"));
            }
        }
    }
    assert!(failures.is_empty(), "differ from llama.cpp: {failures:?}");
}

/// The bound on one type's files. The ternary files get more room: their logits agree with
/// llama.cpp's to float rounding until one Q8_K activation lands on the other side of a
/// rounding tie (floe and llama.cpp sum attention and norms in different orders), and a
/// ternary row's scale is its block's largest weight, so that one step moves these logits by
/// more than it does in the other files (measured on both TQ files with their prompts through
/// the matvec kernels: every place before the first flip within 1.5e-6, the flip 0.066, the
/// largest difference after it 0.115; through the wide prefill tiles, which round otherwise,
/// the largest is 0.118).
fn logits_bound(ty: &str) -> f32 {
    if ty.starts_with("TQ") {
        0.15
    } else {
        LLAMACPP_LOGITS_TOL
    }
}

/// The K-quant files' bound (`qwen3_moe_k256/README.md`): an independent float64 implementation
/// of llama.cpp's activation rounding lands within it.
const LLAMACPP_LOGITS_TOL: f32 = 0.1;

/// A split GGUF whose parts hold different types (the IQ2_XXS file: IQ2_XXS experts and
/// attention, Q4_K / Q6_K / Q8_0 / F32 elsewhere) runs from any part as the single file does,
/// bit for bit.
#[test]
fn split_file_mixing_types_runs_as_one() {
    use floe::formats::source::open_model;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.gguf");
    std::fs::copy(fixtures("iquant").join("model-IQ2_XXS.gguf"), &file).unwrap();
    let parts = floe::formats::gguf::write::split_gguf(&file, 9).unwrap();
    assert!(parts.len() >= 3);
    let types = |p: &Path| -> std::collections::BTreeSet<u32> {
        GgufFile::open(p).unwrap().tensors.iter().map(|t| t.ggml_type.id()).collect()
    };
    let per_part: Vec<_> = parts.iter().map(|p| types(p)).collect();
    assert!(per_part.iter().all(|t| t.len() >= 3), "every part mixes types: {per_part:?}");
    let prompt: Vec<u32> = (40..60).collect();
    let run = |path: &Path| {
        let m = open_model(path, false, None).unwrap();
        let experts = floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap();
        let model = Model::new(m.config, m.dense, Box::new(experts), 1).unwrap();
        model.forward(&mut Session::default(), &prompt, true).unwrap()
    };
    let want = run(&file);
    for p in [&parts[0], &parts[parts.len() - 1]] {
        assert_eq!(floe_tests::max_abs_diff(&run(p), &want), 0.0, "{}", p.display());
    }
}

/// A block whose f16 scale is NaN is an error naming the tensor and the block, not NaN logits.
#[test]
fn nan_scale_is_an_error_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.gguf");
    std::fs::copy(fixtures("iquant").join("model-IQ2_XXS.gguf"), &file).unwrap();
    let offset = {
        let g = GgufFile::open(&file).unwrap();
        let t = g.tensor("blk.1.attn_q.weight").unwrap();
        assert_eq!(t.ggml_type.id(), DType::Iq2Xxs.ggml_id());
        // Block 3's scale: its first two bytes.
        t.offset + 3 * DType::Iq2Xxs.block_bytes() as u64
    };
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[offset as usize..offset as usize + 2].copy_from_slice(&0x7E00u16.to_le_bytes());
    std::fs::write(&file, bytes).unwrap();
    let Err(err) = floe::formats::source::open_model(&file, false, None) else {
        panic!("a NaN scale opened without an error");
    };
    let msg = err.to_string();
    assert!(msg.contains("blk.1.attn_q.weight") && msg.contains("block 3"), "{msg}");
}

/// A synthetic model with the experts' down in another type than gate and up (`floe synth
/// --down-dtype`, `--mix ud-2bit`) keeps those types, and runs the same packed and as the GGUF
/// it exports, in place.
#[test]
fn synth_mixed_types_run_packed_and_as_gguf() {
    use floe::formats::source::open_model;
    let tmp = tempfile::tempdir().unwrap();
    let mut shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    (shape.hidden, shape.heads, shape.kv_heads, shape.head_dim) = (256, 4, 1, 64);
    shape.expert_ffn = 256;
    shape.dense_dtype = Some(DType::Q8_0);
    let dir = tmp.path().join("mixed");
    let types = [DType::Iq2Xxs, DType::Iq2Xxs, DType::Iq3Xxs];
    floe::formats::synth::synth_mixed(&shape, &dir, types, 3, &mut |_, _| {}).unwrap();
    let packed = floe::formats::packed::PackedModel::open(&dir, true).unwrap();
    let file = tmp.path().join("mixed.gguf");
    floe::formats::gguf::write::export_gguf(&packed, &file, &mut |_, _| {}).unwrap();
    let g = GgufFile::open(&file).unwrap();
    for (name, want) in [("gate", DType::Iq2Xxs), ("up", DType::Iq2Xxs), ("down", DType::Iq3Xxs)] {
        let t = g.tensor(&format!("blk.0.ffn_{name}_exps.weight")).unwrap();
        assert_eq!(DType::from_ggml_id(t.ggml_type.id()), Some(want), "{name}");
    }
    let prompt: Vec<u32> = (40..60).collect();
    let want =
        floe_tests::load(&packed, 1).forward(&mut Session::default(), &prompt, true).unwrap();
    let m = open_model(&file, false, None).unwrap();
    let experts = floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap();
    let model = Model::new(m.config, m.dense, Box::new(experts), 1).unwrap();
    let got = model.forward(&mut Session::default(), &prompt, true).unwrap();
    assert!(want.iter().all(|v| v.is_finite()));
    assert_eq!(floe_tests::max_abs_diff(&got, &want), 0.0);
}
