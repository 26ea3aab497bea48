//! The model's reasoning set apart from its answer, as `reasoning_content` (the field
//! DeepSeek's API and llama.cpp use): gpt-oss writes it on harmony's `analysis` channel and its
//! answer on `final`; Qwen3 and DeepSeek-R1 style models write it between `<think>` and
//! `</think>`. Read from the generated text with special tokens spelled out.

use floe::model::tokenizer::TextCodec;

/// How a template's model sets its reasoning apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// gpt-oss: messages on channels.
    Harmony,
    /// `<think>...</think>` before the answer.
    Think,
}

impl Style {
    /// The style a chat template teaches, if any.
    pub fn detect(template: &str) -> Option<Self> {
        if template.contains("<|channel|>") {
            Some(Style::Harmony)
        } else if template.contains("<think>") {
            Some(Style::Think)
        } else {
            None
        }
    }
}

const MESSAGE: &str = "<|message|>";
const ENDS: [&str; 3] = ["<|end|>", "<|return|>", "<|call|>"];

/// `text` split into (reasoning, answer).
pub fn split(style: Style, text: &str) -> (String, String) {
    match style {
        Style::Think => {
            let t = text.trim_start();
            let Some(rest) = t.strip_prefix("<think>") else {
                return (String::new(), text.to_string());
            };
            match rest.split_once("</think>") {
                Some((r, c)) => (r.trim().to_string(), c.trim_start().to_string()),
                None => (rest.trim_start().to_string(), String::new()),
            }
        }
        Style::Harmony => {
            // Text that does not begin with a channel header is all answer (a model that
            // ignores the format).
            if !text.contains(MESSAGE)
                && !text.starts_with("<|channel|>")
                && !text.starts_with("<|start|>")
            {
                return (String::new(), text.to_string());
            }
            let (mut reasoning, mut answer) = (String::new(), String::new());
            let mut rest = text;
            while let Some(m) = rest.find(MESSAGE) {
                let header = &rest[..m];
                let body = &rest[m + MESSAGE.len()..];
                let (end, next) = ENDS
                    .iter()
                    .filter_map(|e| body.find(e).map(|i| (i, i + e.len())))
                    .min()
                    .unwrap_or((body.len(), body.len()));
                let channel = header.rsplit("<|channel|>").next().unwrap_or("");
                if channel.starts_with("analysis") {
                    reasoning.push_str(&body[..end]);
                } else if !header.contains("to=functions.") {
                    answer.push_str(&body[..end]);
                }
                rest = &body[next..];
            }
            (reasoning, answer)
        }
    }
}

/// Splits a generation as it grows: each token gives the new reasoning and answer text.
#[derive(Debug, Clone)]
pub struct Splitter {
    style: Style,
    ids: Vec<u32>,
    sent_reasoning: usize,
    sent_answer: usize,
}

impl Splitter {
    pub fn new(style: Style) -> Self {
        Self { style, ids: Vec::new(), sent_reasoning: 0, sent_answer: 0 }
    }

    /// Adds a token (`last`: the generation's last); returns (new reasoning, new answer).
    pub fn push(&mut self, codec: &TextCodec, id: u32, last: bool) -> (String, String) {
        self.ids.push(id);
        let spelled = codec.decode_with_specials(&self.ids).unwrap_or_default();
        let (reasoning, answer) = split(self.style, &spelled);
        let r = fresh(&reasoning, &mut self.sent_reasoning, last);
        let a = fresh(&answer, &mut self.sent_answer, last);
        (r, a)
    }
}

/// Longest tail held back as a possible marker (`<|return|>`, `</think>`, ...).
const MARKER_BYTES: usize = 24;

/// What of `all` is new since `sent` bytes, holding back (unless `last`) a tail that may still
/// become a marker (a short one from a last `<` with no `>` after it) or is part of a
/// character (U+FFFD).
fn fresh(all: &str, sent: &mut usize, last: bool) -> String {
    let mut end = all.len();
    if let Some(lt) = all.rfind('<').filter(|_| !last) {
        if !all[lt..].contains('>') && all.len() - lt <= MARKER_BYTES {
            end = lt;
        }
    }
    if !last && all[..end].ends_with('\u{fffd}') {
        end -= '\u{fffd}'.len_utf8();
    }
    // Text already sent stays sent.
    let out = all.get(*sent..end).unwrap_or("").to_string();
    *sent = (*sent).max(end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmony_channels_and_think_blocks_split() {
        let h = "<|channel|>analysis<|message|>Need to think.<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>";
        assert_eq!(split(Style::Harmony, h), ("Need to think.".into(), "Hello!".into()));
        let partial = "<|channel|>analysis<|message|>Need";
        assert_eq!(split(Style::Harmony, partial), ("Need".into(), String::new()));
        let t = "<think>\nLet me see.\n</think>\n\nHi there";
        assert_eq!(split(Style::Think, t), ("Let me see.".into(), "Hi there".into()));
        assert_eq!(split(Style::Think, "<think>still"), ("still".into(), String::new()));
        assert_eq!(split(Style::Think, "plain answer"), (String::new(), "plain answer".into()));
        assert_eq!(split(Style::Harmony, "no format"), (String::new(), "no format".into()));
        assert_eq!(Style::detect("{{ '<|channel|>' }}"), Some(Style::Harmony));
        assert_eq!(Style::detect("x"), None);
    }
}
