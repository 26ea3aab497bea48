//! Constrained decoding: a grammar (a JSON schema, JSON at all, a Lark grammar, a regular
//! expression) turned by `llguidance` into a mask of the tokens that can come next, applied to
//! the logits before a token is chosen, so the output always parses.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use crate::error::{Error, Result};
use crate::model::tokenizer::TextCodec;

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object.
    JsonObject,
    /// A JSON value valid under this JSON schema.
    JsonSchema(serde_json::Value),
    /// A grammar in llguidance's Lark syntax (which can embed JSON schemas with `%json`).
    Lark(String),
    /// A regular expression (Rust `regex` syntax) matched by the whole output.
    Regex(String),
}

impl Grammar {
    fn to_llguidance(&self) -> TopLevelGrammar {
        // JSON is written compactly: no free whitespace, which an unsure model could otherwise
        // emit without end.
        let compact = |mut schema: serde_json::Value| {
            if let Some(o) = schema.as_object_mut() {
                o.entry("x-guidance").or_insert(serde_json::json!({"whitespace_flexible": false}));
            }
            schema
        };
        match self {
            Grammar::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"})))
            }
            Grammar::JsonSchema(s) => TopLevelGrammar::from_json_schema(compact(s.clone())),
            Grammar::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            Grammar::Regex(r) => TopLevelGrammar::from_regex(r),
        }
    }
}

/// Compiles grammars for one model's vocabulary (the token trie is built once).
#[derive(Clone)]
pub struct ConstraintCompiler {
    factory: Arc<ParserFactory>,
}

impl std::fmt::Debug for ConstraintCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintCompiler").finish_non_exhaustive()
    }
}

fn grammar_err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("grammar: {e}"))
}

impl ConstraintCompiler {
    /// For the model's tokenizer, its end-of-sequence tokens and its logits' length.
    pub fn new(codec: &TextCodec, eos: &[u32], vocab: usize) -> Result<Self> {
        let mut bytes = toktrie_hf_tokenizers::ByteTokenizer::from_tokenizer(codec.hf().clone())
            .map_err(|e| {
                Error::Unsupported(format!("constrained decoding for this tokenizer: {e}"))
            })?;
        if !eos.is_empty() {
            bytes.set_eos_tokens(eos);
        }
        let env = bytes.into_tok_env(Some(vocab)).map_err(|e| {
            Error::Unsupported(format!("constrained decoding for this tokenizer: {e}"))
        })?;
        let mut factory = ParserFactory::new_simple(&env).map_err(grammar_err)?;
        factory.quiet();
        Ok(Self { factory: Arc::new(factory) })
    }

    /// A fresh constraint for one generation (errors name what is wrong with the grammar).
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint> {
        let parser = self.factory.create_parser(grammar.to_llguidance()).map_err(grammar_err)?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(grammar_err(e));
        }
        Ok(Constraint { matcher })
    }
}

/// One generation's grammar state.
pub struct Constraint {
    matcher: Matcher,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("stopped", &self.matcher.is_stopped()).finish()
    }
}

impl Constraint {
    /// Sets the logits of tokens the grammar does not allow next to minus infinity.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed = self.matcher.compute_mask_or_eos().map_err(grammar_err)?;
        for (i, l) in logits.iter_mut().enumerate() {
            if !allowed.is_allowed(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past the chosen token.
    pub fn commit(&mut self, token: u32) -> Result<()> {
        if self.matcher.is_stopped() {
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(grammar_err)
    }

    /// Whether the grammar is complete and nothing more can follow.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}
