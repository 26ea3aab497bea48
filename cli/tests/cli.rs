//! The `floe` binary end to end: pack a golden model, run it, check the JSON it prints.

use std::process::Command;

/// `../shared/golden/<name>` (a missing fixture fails the test unless FLOE_SKIP_GOLDEN=1).
fn golden_dir(name: &str) -> Option<std::path::PathBuf> {
    floe_cache::fixtures::shared_fixture(&format!("golden/{name}"))
}

fn floe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_floe"))
}

#[test]
fn pack_then_run_json_gives_the_reference_tokens() {
    let Some(dir) = golden_dir("mixtral") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let st = floe()
        .args(["pack", "--from"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .args(["--dtype", "f32"])
        .status()
        .unwrap();
    assert!(st.success());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let o = floe()
        .args(["run", "--json", "--ignore-eos", "-n", "16", "--verify", "--model"])
        .arg(&out)
        .arg("--prompt")
        .arg(meta["prompt"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["prompt_ids"], meta["input_ids"]);
    assert_eq!(v["generated_ids"], meta["gen_ids"]);
    assert_eq!(v["text"], meta["gen_text"]);
    for key in ["prompt_tokens", "generated_tokens", "ttft_s", "prefill_tok_s", "decode_tok_s"] {
        assert!(v["stats"][key].is_number(), "stats.{key} missing: {}", v["stats"]);
    }
    // The kernels this process chose, as the library names them.
    let kernels = floe::kernels::dot::kernels().describe();
    assert_eq!(v["stats"]["kernels"], kernels.as_str(), "{}", v["stats"]);
}

#[test]
fn errors_are_one_readable_line_and_a_failure_code() {
    let o = floe().args(["run", "--model", "/no/such/model"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: ") && err.contains("/no/such/model/floe.json"), "{err}");
    let o = floe().args(["pack", "--from", "/no/such/ckpt", "--out", "/tmp/x"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/ckpt/config.json"));
}

/// A trace written by `--trace-out` replays in `floe sim`, and its LRU hit count equals the one
/// the live run reported with `--cache lru --prefetch none` at the same capacity.
#[test]
fn trace_out_replays_in_sim_with_the_live_lru_hits() {
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    assert!(floe()
        .args(["pack", "--from"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .args(["--dtype", "q8_0"])
        .status()
        .unwrap()
        .success());
    let trace = tmp.path().join("t.jsonl");
    for mb in ["0", "1"] {
        let o = floe()
            .args([
                "run",
                "--json",
                "--ignore-eos",
                "-n",
                "24",
                "--cache",
                "lru",
                "--prefetch",
                "none",
                "--model",
            ])
            .arg(&out)
            .args(["--cache-mb", mb])
            .arg("--trace-out")
            .arg(&trace)
            .output()
            .unwrap();
        if mb != "1" {
            // 0 MiB: below one layer's top-k, refused with the minimum.
            assert!(!o.status.success());
            assert!(String::from_utf8_lossy(&o.stderr).contains("below one layer's top-k"));
            continue;
        }
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let live: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let slots = live["stats"]["cache_slots"].as_u64().unwrap().to_string();
        let o = floe()
            .args([
                "sim",
                "--cache",
                "lru",
                "--phase",
                "all",
                "--json",
                "--capacity",
                &slots,
                "--trace",
            ])
            .arg(&trace)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let first = String::from_utf8_lossy(&o.stdout).lines().next().unwrap().to_string();
        let sim: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(sim["policy"], "lru");
        assert_eq!(sim["hits"], live["stats"]["hits"], "sim {sim} vs live {}", live["stats"]);
        assert_eq!(sim["misses"], live["stats"]["misses"]);
    }
}

/// `floe tokenize` gives the golden prompt ids, from a GGUF file's rebuilt tokenizer (no weights
/// loaded) and from a tokenizer directory.
#[test]
fn tokenize_gives_the_golden_prompt_ids() {
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let prompt = meta["prompt"].as_str().unwrap();
    let want: Vec<u32> = serde_json::from_value(meta["input_ids"].clone()).unwrap();
    for args in [
        vec!["--model".to_string(), dir.join("model-Q8_0.gguf").display().to_string()],
        vec![
            "--model".into(),
            dir.join("model-Q8_0.gguf").display().to_string(),
            "--tokenizer".into(),
            dir.display().to_string(),
        ],
    ] {
        let o = floe().arg("tokenize").args(&args).args(["-p", prompt]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(got, want, "{args:?}");
        let o =
            floe().arg("tokenize").args(&args).args(["--count", "-p", prompt]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want.len().to_string());
    }
}

/// KV cache types from the command line: keys and values apart under llama.cpp's spellings,
/// reported per part by `--json`; MLA's parts on an MLA model; a part the model does not have
/// and an unknown type are errors naming them.
#[test]
fn kv_type_flags_set_each_part_and_bad_ones_are_refused() {
    let Some(qwen) = golden_dir("qwen3_moe") else { return };
    let Some(deepseek) = golden_dir("deepseek_v3") else { return };
    let run = |model: &std::path::Path, flags: &[&str]| {
        floe()
            .args(["run", "--json", "--ignore-eos", "-n", "4", "--model"])
            .arg(model)
            .args(flags)
            .output()
            .unwrap()
    };
    let o = run(&qwen.join("model-F32.gguf"), &["--cache-type-k", "tq3", "--kv-type-v", "q4_0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stats"]["kv_types"], "k=tq3 v=q4_0");
    // 3 layers x 2 KV heads of 32: tq3 is one 32-value block (2 + 12 bytes), q4_0 one 18-byte block.
    let parts = &v["stats"]["kv_bytes_per_position_parts"];
    assert_eq!((parts["k"].as_u64(), parts["v"].as_u64()), (Some(3 * 2 * 14), Some(3 * 2 * 18)));
    let o = run(
        &deepseek.join("model-F32.gguf"),
        &["--kv-type-latent", "tq4", "--kv-type-rope", "f16"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 3 layers of one row: a 32-value tq4 latent (2 + 16 bytes, padded to 20) and an 8-value f16 RoPE key.
    assert_eq!(v["stats"]["kv_bytes_per_position_parts"]["mla"].as_u64(), Some(3 * (20 + 16)));
    let o = run(&qwen.join("model-F32.gguf"), &["--kv-type-latent", "tq3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("--kv-type-latent: this model has no MLA layer"));
    let o = run(&qwen.join("model-F32.gguf"), &["--kv-dtype", "q3_k"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown KV cache type \"q3_k\"") && err.contains("tq3"), "{err}");
}
