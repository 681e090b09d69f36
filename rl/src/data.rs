//! Prompt datasets in verl's layout (DAPO-Math-17k and friends): one row per prompt with
//! `prompt` (chat messages), `reward_model.ground_truth` and `data_source`, as JSONL or parquet (the
//! format verl's data scripts write; snappy or uncompressed). Every malformed row is reported with its
//! line (JSONL) or row (parquet) number and what is wrong. Only regular files are opened (a FIFO is
//! refused, not waited on); a JSONL file may start with a UTF-8 byte-order mark, and a line that is not
//! UTF-8 is an error naming that line.
use crate::error::{Error, Result};
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

/// Read a dataset file: `.parquet` by the parquet reader, anything else as JSONL.
pub fn read_prompts(path: &Path) -> Result<Vec<PromptRow>> {
    if path.extension().is_some_and(|e| e == "parquet") {
        read_parquet(path)
    } else {
        read_jsonl(path)
    }
}

/// Read a `.jsonl` file of verl-layout rows (a regular file; a FIFO or a device is refused, not waited on).
pub fn read_jsonl(path: &Path) -> Result<Vec<PromptRow>> {
    let bytes = entrl_qwen3::files::read(path)?;
    parse_jsonl_bytes(&bytes).map_err(|e| e.in_data_file(path))
}

/// Read a verl-layout parquet file (rows through the record API, each checked like a JSONL line).
pub fn read_parquet(path: &Path) -> Result<Vec<PromptRow>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let at = |msg: String| Error::data(path, None, msg);
    let file = entrl_qwen3::files::open_regular(path)?;
    let reader = SerializedFileReader::new(file).map_err(|e| at(format!("not a readable parquet file ({e})")))?;
    let iter = reader.get_row_iter(None).map_err(|e| at(e.to_string()))?;
    let mut rows = Vec::new();
    for (i, row) in iter.enumerate() {
        let row = row.map_err(|e| at(format!("row {}: {e}", i + 1)))?;
        rows.push(row_from_value(row.to_json_value()).map_err(|e| at(format!("row {}: {e}", i + 1)))?);
    }
    if rows.is_empty() {
        return Err(at("no prompt rows".into()));
    }
    Ok(rows)
}

/// [`parse_jsonl`] on a file's bytes: a leading UTF-8 byte-order mark is skipped, and each line is decoded
/// on its own, so a line that is not UTF-8 is an error naming it.
pub fn parse_jsonl_bytes(bytes: &[u8]) -> Result<Vec<PromptRow>> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let mut rows = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|e| {
            let msg = format!("not UTF-8 text (invalid byte at offset {} in the line)", e.valid_up_to());
            Error::Data { file: None, line: Some(i + 1), msg }
        })?;
        if let Some(row) = parse_line(line, i)? {
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Err(bad_row("no prompt rows"));
    }
    Ok(rows)
}

/// The UTF-8 byte-order mark some editors write at the start of a file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parse verl-layout rows, one JSON object per non-empty line (a leading byte-order mark is skipped).
pub fn parse_jsonl(text: &str) -> Result<Vec<PromptRow>> {
    parse_jsonl_bytes(text.as_bytes())
}

/// One JSONL line (0-based `index`, a trailing `\r` ignored): `None` when blank.
fn parse_line(line: &str, index: usize) -> Result<Option<PromptRow>> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let at_line = |msg: String| Error::Data { file: None, line: Some(index + 1), msg };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at_line(format!("not JSON ({e})")))?;
    row_from_value(v).map(Some).map_err(|e| at_line(e.to_string()))
}

/// A malformed row (the caller adds its file and line or row).
fn bad_row(msg: impl Into<String>) -> Error {
    Error::Data { file: None, line: None, msg: msg.into() }
}

/// One verl-layout row from its JSON form.
fn row_from_value(v: serde_json::Value) -> Result<PromptRow> {
    let raw: RawRow = serde_json::from_value(v).map_err(|e| bad_row(format!("not a verl prompt row ({e})")))?;
    let messages = match raw.prompt {
        serde_json::Value::String(s) => vec![Message::new("user", &s)],
        v @ serde_json::Value::Array(_) => serde_json::from_value::<Vec<Message>>(v)
            .map_err(|e| bad_row(format!("prompt must be a list of {{role, content}} messages ({e})")))?,
        _ => return Err(bad_row("prompt must be a string or a list of chat messages")),
    };
    if messages.is_empty() {
        return Err(bad_row("prompt has no messages"));
    }
    if let Some(m) = messages.iter().find(|m| !["system", "user", "assistant"].contains(&m.role.as_str())) {
        return Err(bad_row(format!("unknown message role {:?}", m.role)));
    }
    let ground_truth = match raw.reward_model.ground_truth {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        v => return Err(bad_row(format!("reward_model.ground_truth must be a string or number, got {v}"))),
    };
    Ok(PromptRow { messages, ground_truth, data_source: raw.data_source.unwrap_or_else(|| "math_dapo".into()) })
}
