//! Prompt datasets in verl's layout (DAPO-Math-17k and friends): one row per prompt with
//! `prompt` (chat messages), `reward_model.ground_truth` and `data_source`. JSONL is read here;
//! every malformed row is reported with its line number and what is wrong.
use entrl_qwen3::Message;
use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct PromptRow {
    pub messages: Vec<Message>,
    pub ground_truth: String,
    pub data_source: String,
}

#[derive(Deserialize)]
struct RawRewardModel {
    ground_truth: serde_json::Value,
}

#[derive(Deserialize)]
struct RawRow {
    prompt: serde_json::Value,
    reward_model: RawRewardModel,
    data_source: Option<String>,
}

/// Read a `.jsonl` file of verl-layout rows.
pub fn read_jsonl(path: &Path) -> Result<Vec<PromptRow>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_jsonl(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parse verl-layout rows, one JSON object per non-empty line.
pub fn parse_jsonl(text: &str) -> Result<Vec<PromptRow>, String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| format!("line {}: {msg}", i + 1);
        let raw: RawRow = serde_json::from_str(line).map_err(|e| at(format!("not a verl prompt row ({e})")))?;
        let messages = match raw.prompt {
            serde_json::Value::String(s) => vec![Message::new("user", &s)],
            v @ serde_json::Value::Array(_) => serde_json::from_value::<Vec<Message>>(v)
                .map_err(|e| at(format!("prompt must be a list of {{role, content}} messages ({e})")))?,
            _ => return Err(at("prompt must be a string or a list of chat messages".into())),
        };
        if messages.is_empty() {
            return Err(at("prompt has no messages".into()));
        }
        if let Some(m) = messages.iter().find(|m| !["system", "user", "assistant"].contains(&m.role.as_str())) {
            return Err(at(format!("unknown message role {:?}", m.role)));
        }
        let ground_truth = match raw.reward_model.ground_truth {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            v => return Err(at(format!("reward_model.ground_truth must be a string or number, got {v}"))),
        };
        rows.push(PromptRow {
            messages,
            ground_truth,
            data_source: raw.data_source.unwrap_or_else(|| "math_dapo".into()),
        });
    }
    if rows.is_empty() {
        return Err("no prompt rows".into());
    }
    Ok(rows)
}
