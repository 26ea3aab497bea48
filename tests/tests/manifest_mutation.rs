//! `floe.json` mutated field by field (numbers to 0, -1, huge; floats negative or NaN-like;
//! lists shortened or emptied; keys removed; strings garbled): opening the model is either an
//! error or a model that then loads and runs two tokens (or errors there), never a panic.

use std::path::Path;

use floe::formats::packed::PackedModel;
use floe_kernels::DType;
use proptest::prelude::*;
use serde_json::Value;

/// Every path from the root to a value, as JSON-pointer tokens.
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if !at.is_empty() {
        out.push(at.clone());
    }
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            at.push(k.clone());
            paths(x, at, out);
            at.pop();
        }),
        Value::Array(a) => a.iter().enumerate().take(3).for_each(|(i, x)| {
            at.push(i.to_string());
            paths(x, at, out);
            at.pop();
        }),
        _ => {}
    }
}

fn pointer(path: &[String]) -> String {
    path.iter().map(|p| format!("/{p}")).collect()
}

/// Applies mutation `kind` at `path`.
fn mutate(root: &mut Value, path: &[String], kind: usize) {
    let (parent, last) = (pointer(&path[..path.len() - 1]), &path[path.len() - 1]);
    if kind == 0 {
        // Remove the key (or the list element).
        match root.pointer_mut(&parent) {
            Some(Value::Object(m)) => {
                m.remove(last);
            }
            Some(Value::Array(a)) => {
                a.remove(last.parse::<usize>().unwrap());
            }
            _ => {}
        }
        return;
    }
    let v = root.pointer_mut(&pointer(path)).unwrap();
    *v = match (&*v, kind) {
        (Value::Array(a), 1) => Value::Array(a[..a.len() / 2].to_vec()),
        (Value::Array(_), _) => Value::Array(Vec::new()),
        (Value::String(_), 1) => Value::String("garbage".into()),
        (Value::String(s), _) => Value::String(format!("{s}{s}")),
        (Value::Bool(b), _) => Value::Bool(!b),
        (_, 1) => 0.into(),
        (_, 2) => (-1).into(),
        (_, 3) => 65_536.into(),
        (_, 4) => u32::MAX.into(),
        (_, 5) => (1u64 << 62).into(),
        (_, 6) => u64::MAX.into(),
        (_, 7) => (-0.5).into(),
        (_, 8) => 1e30.into(),
        (_, _) => 3.into(),
    };
}

fn open_and_run(dir: &Path) {
    let _ = floe::testing::open_and_run_two_tokens(dir);
}

#[test]
fn mutated_floe_json_opens_or_errors_never_panics() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let model = base.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &model, DType::Q8_0, 4, &mut |_, _| {}).unwrap();
    let text = std::fs::read_to_string(model.join("floe.json")).unwrap();
    let root: Value = serde_json::from_str(&text).unwrap();
    let mut all = Vec::new();
    paths(&root, &mut Vec::new(), &mut all);
    assert!(all.len() > 50, "{} fields", all.len());
    // The unmutated manifest opens and runs.
    open_and_run(&model);
    PackedModel::open(&model, true).unwrap();

    let case = std::sync::atomic::AtomicUsize::new(0);
    let cfg = ProptestConfig { cases: 1000, failure_persistence: None, ..Default::default() };
    proptest!(cfg, |(pick in 0..all.len(), kind in 0usize..10, second in proptest::option::of((0..all.len(), 0usize..10)))| {
        let dir = base.path().join(format!("m{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::create_dir(&dir).unwrap();
        for f in std::fs::read_dir(&model).unwrap() {
            let f = f.unwrap();
            if f.file_name() != "floe.json" {
                std::os::unix::fs::symlink(f.path(), dir.join(f.file_name())).unwrap();
            }
        }
        let mut v = root.clone();
        mutate(&mut v, &all[pick], kind);
        if let Some((p2, k2)) = second {
            if v.pointer(&pointer(&all[p2])).is_some() {
                mutate(&mut v, &all[p2], k2);
            }
        }
        std::fs::write(dir.join("floe.json"), v.to_string()).unwrap();
        open_and_run(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
