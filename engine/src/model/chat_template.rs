//! The Jinja environment chat templates are rendered in: minijinja with Python's string and
//! dict methods, and the helpers transformers gives templates (`raise_exception`,
//! `strftime_now`, and a `tojson` that writes what Python's `json.dumps` writes, so prompts
//! match the ones the models were trained on).

use minijinja::value::Kwargs;
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};

/// An environment with `template` added under the name `chat`.
pub fn environment(template: &str) -> Result<Environment<'_>, JinjaError> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, JinjaError> {
        Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
    });
    // Templates print today's date; a fixed one keeps prompts reproducible.
    env.add_function("strftime_now", |fmt: String| -> String {
        [("%Y", "2026"), ("%m", "01"), ("%d", "01"), ("%B", "January"), ("%b", "Jan")]
            .iter()
            .fold(fmt, |s, (k, v)| s.replace(k, v))
    });
    env.add_filter("tojson", tojson);
    env.add_template("chat", template)?;
    Ok(env)
}

/// `json.dumps(value, ensure_ascii=False, indent=..., separators=..., sort_keys=...)`, as
/// transformers' `tojson` (its `ensure_ascii` is accepted; output is never ASCII-escaped).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item, key) = match separators.as_deref() {
        Some([i, k]) => (i.clone(), k.clone()),
        Some(_) => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                "separators takes two strings",
            ))
        }
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let json = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    dumps(&json, &Style { indent, item, key, sort_keys: sort_keys.unwrap_or(false) }, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

struct Style {
    indent: Option<usize>,
    item: String,
    key: String,
    sort_keys: bool,
}

fn newline(s: &Style, depth: usize, out: &mut String) {
    if let Some(n) = s.indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * depth));
    }
}

fn dumps(v: &serde_json::Value, s: &Style, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(&s.item);
                }
                newline(s, depth + 1, out);
                dumps(x, s, depth + 1, out);
            }
            newline(s, depth, out);
            out.push(']');
        }
        J::Object(o) if !o.is_empty() => {
            let mut entries: Vec<(&String, &serde_json::Value)> = o.iter().collect();
            if s.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&s.item);
                }
                newline(s, depth + 1, out);
                out.push_str(&serde_json::Value::from(k.as_str()).to_string());
                out.push_str(&s.key);
                dumps(x, s, depth + 1, out);
            }
            newline(s, depth, out);
            out.push('}');
        }
        // Python writes floats with a fraction (1.0), serde_json too; others as JSON.
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    /// Against Python: `json.dumps({"a": [1, 2.5, "é<"], "b": {}}, ensure_ascii=False)` and the
    /// same with `indent=2` and `separators=(",", ":")`.
    #[test]
    fn tojson_writes_what_python_writes() {
        let env = super::environment(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(separators=[',', ':']) }}|{{ x | tojson(ensure_ascii=False) }}",
        )
        .unwrap();
        let x = serde_json::json!({"a": [1, 2.5, "é<"], "b": {}});
        let out = env.get_template("chat").unwrap().render(minijinja::context! { x => x }).unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, 2.5, \"é<\"], \"b\": {}}|{\n  \"a\": [\n    1,\n    2.5,\n    \"é<\"\n  ],\n  \"b\": {}\n}|{\"a\":[1,2.5,\"é<\"],\"b\":{}}|{\"a\": [1, 2.5, \"é<\"], \"b\": {}}"
        );
    }
}
