//! Qwen3 tokenizer (`tokenizer.json` through the tokenizers crate) and its chat template
//! (`tokenizer_config.json`'s Jinja template, rendered by minijinja with Python string methods). Both files
//! are read as regular files only ([`crate::files`]). A template runs under limits: at most
//! [`TEMPLATE_FUEL`] instructions and [`TEMPLATE_MAX_OUTPUT`] bytes of output, so a runaway template is a
//! clear error instead of minutes of work and gigabytes of text.
use crate::error::{ModelError, Result};
use crate::files;
use serde::Serialize;
use std::path::Path;

/// Instructions a chat template may execute (minijinja's fuel). Qwen3's own template spends about 56 per
/// message (measured: 555,069 for 10,000 turns), so conversations of some 300,000 turns fit, while a runaway
/// loop stops after about a second (40 million fuel took 1.7 s on the 2-core CI machine).
pub const TEMPLATE_FUEL: u64 = 20_000_000;
/// Bytes a rendered chat template may produce: 64 MiB.
pub const TEMPLATE_MAX_OUTPUT: usize = 64 << 20;

/// One chat turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    template: Option<String>,
    /// `<|im_end|>` and the configured EOS: generation stops on any of these ids.
    stop_ids: Vec<u32>,
    eos: Option<String>,
}

impl Tokenizer {
    /// Load `dir/tokenizer.json` and, when present, the chat template of `dir/tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let cannot = |msg: String| ModelError::Checkpoint {
            file: path.display().to_string(),
            msg: format!("cannot load tokenizer: {msg}"),
        };
        let bytes = files::read(&path).map_err(|e| match e {
            ModelError::Checkpoint { msg, .. } => cannot(msg),
            e => e,
        })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| cannot(e.to_string()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let (template, eos) = if cfg_path.exists() {
            let text = files::read_to_string(&cfg_path)?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
                path: cfg_path.display().to_string(),
                msg: format!("malformed: {e}"),
            })?;
            (
                v.get("chat_template").and_then(|t| t.as_str()).map(String::from),
                v.get("eos_token").and_then(|t| t.as_str()).map(String::from),
            )
        } else {
            (None, None)
        };
        Ok(Self::from_parts(inner, template, eos.as_deref()))
    }

    /// A tokenizer built in code (the built-in task's), with an optional template and EOS token.
    pub fn from_parts(inner: tokenizers::Tokenizer, template: Option<String>, eos: Option<&str>) -> Self {
        let mut stop_ids: Vec<u32> =
            ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| inner.token_to_id(t)).collect();
        if let Some(id) = eos.and_then(|e| inner.token_to_id(e)) {
            stop_ids.push(id);
        }
        stop_ids.sort();
        stop_ids.dedup();
        Self { inner, template, stop_ids, eos: eos.map(String::from) }
    }

    /// Write `dir/tokenizer.json` and `dir/tokenizer_config.json` (chat template, EOS) atomically, so
    /// [`Tokenizer::from_dir`] reads the same tokenizer back.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = self.inner.to_string(false).map_err(|e| ModelError::Invalid(format!("tokenizer: {e}")))?;
        crate::save::write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
        let cfg = serde_json::json!({ "chat_template": self.template, "eos_token": self.eos });
        let text = serde_json::to_string_pretty(&cfg).expect("a JSON object serializes");
        crate::save::write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| ModelError::Invalid(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| ModelError::Invalid(format!("tokenizer: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids that end a generated response.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The chat template applied to `messages`; `add_generation_prompt` opens the assistant turn.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let Some(t) = &self.template else {
            return Err(ModelError::Invalid("this tokenizer has no chat_template (tokenizer_config.json)".into()));
        };
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_template("chat", t).map_err(|e| ModelError::Invalid(format!("chat template does not parse: {e}")))?;
        let tmpl = env.get_template("chat").map_err(|e| ModelError::Invalid(e.to_string()))?;
        let mut out = CappedWriter { buf: Vec::new(), cap: TEMPLATE_MAX_OUTPUT, overflowed: false };
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            tools => minijinja::Value::from(()),
        };
        let rendered = tmpl.render_captured_to(ctx, &mut out).map(drop);
        match rendered {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|_| ModelError::Invalid("chat template produced invalid UTF-8".into())),
            Err(_) if out.overflowed => Err(ModelError::Invalid(format!(
                "chat template output exceeds {} MiB (a runaway template?)",
                TEMPLATE_MAX_OUTPUT >> 20
            ))),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(ModelError::Invalid(format!(
                "chat template ran more than {TEMPLATE_FUEL} instructions (a runaway template?)"
            ))),
            Err(e) => Err(ModelError::Invalid(format!("chat template failed: {e}"))),
        }
    }
}

/// A writer that refuses to grow past `cap` bytes (and remembers that it did).
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output over the cap"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
