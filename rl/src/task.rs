//! The built-in verifiable task that `entrl train` learns with no arguments: single-digit addition
//! ("3 + 4 =" → "7", sums up to 9) with a word-level tokenizer made with the tokenizers crate and a tiny
//! Qwen3 shape. The reward checks the first word of the response, so a random-init policy (uniform over
//! the 19-token vocabulary) is right about 1 time in 19, and RL alone has signal from the first step.
use crate::data::PromptRow;
use crate::reward::{Score, Verifier};
use entrl_qwen3::{Message, Qwen3Config, Tokenizer};
use std::collections::HashMap;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::AddedToken;

/// `data_source` of the built-in prompts (its verifier is [`FirstWord`]).
pub const BUILTIN_SOURCE: &str = "entrl/add";

const SPECIAL: [&str; 4] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"];
const WORDS: [&str; 15] = ["system", "user", "assistant", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "="];

/// Qwen3's chat layout with space-separated words (the word-level tokenizer splits on whitespace).
const TEMPLATE: &str = "{% for m in messages %}<|im_start|> {{ m.role }} {{ m.content }} <|im_end|> {% endfor %}\
{% if add_generation_prompt %}<|im_start|> assistant {% endif %}";

/// The built-in tokenizer: 19 tokens, `<|im_end|>` ends a response.
pub fn builtin_tokenizer() -> Tokenizer {
    let vocab: HashMap<String, u32> =
        SPECIAL.iter().chain(WORDS.iter()).enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect();
    let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token("<unk>".into()).build();
    let model = model.expect("the built-in vocabulary is valid");
    let mut inner = tokenizers::Tokenizer::new(model);
    inner.with_pre_tokenizer(Some(WhitespaceSplit));
    let specials: Vec<AddedToken> = SPECIAL.iter().map(|t| AddedToken::from(*t, true)).collect();
    inner.add_special_tokens(&specials);
    Tokenizer::from_parts(inner, Some(TEMPLATE.to_string()), Some("<|im_end|>"))
}

/// The tiny Qwen3 the built-in run trains from random init: 2 layers, hidden 64, 4 query / 2 KV heads of
/// 32 (the smallest head size the CUDA attention kernels take), tied embeddings.
pub fn builtin_model_config(vocab_size: usize) -> Qwen3Config {
    Qwen3Config {
        vocab_size,
        hidden_size: 64,
        intermediate_size: 192,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 32,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        tie_word_embeddings: true,
        max_position_embeddings: 256,
        rope_bf16_inv_freq: false,
    }
}

/// Every "a + b =" with a + b ≤ `max_sum` (≤ 9), in a fixed order.
pub fn builtin_prompts(max_sum: usize) -> Vec<PromptRow> {
    let max_sum = max_sum.min(9);
    let mut rows = Vec::new();
    for a in 0..=max_sum {
        for b in 0..=max_sum - a {
            rows.push(PromptRow {
                messages: vec![Message::new("user", &format!("{a} + {b} ="))],
                ground_truth: (a + b).to_string(),
                data_source: BUILTIN_SOURCE.into(),
            });
        }
    }
    rows
}

/// +1 when the response's first whitespace-separated word equals the ground truth, else −1.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstWord;

impl Verifier for FirstWord {
    fn score(&self, response: &str, ground_truth: &str) -> Score {
        let pred = response.split_whitespace().next().unwrap_or("").to_string();
        let acc = pred == ground_truth.trim();
        Score { score: if acc { 1.0 } else { -1.0 }, acc, pred }
    }
    fn name(&self) -> &str {
        "first_word"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_round_trips_the_chat_prompt() {
        let tok = builtin_tokenizer();
        assert_eq!(tok.vocab_size(), 19);
        let text = tok.apply_chat_template(&builtin_prompts(9)[7].messages, true).unwrap();
        let ids = tok.encode(&text).unwrap();
        assert_eq!(ids.len(), 9, "{text:?} → {ids:?}");
        assert!(!ids.contains(&tok.token_id("<unk>").unwrap()));
        assert_eq!(tok.stop_ids(), &[tok.token_id("<|endoftext|>").unwrap(), tok.token_id("<|im_end|>").unwrap()]);
        let answer = tok.encode("7").unwrap();
        assert_eq!(tok.decode(&answer, true).unwrap(), "7");
    }

    #[test]
    fn prompts_and_verifier() {
        let rows = builtin_prompts(9);
        assert_eq!(rows.len(), 55);
        assert!(rows.iter().all(|r| r.ground_truth.parse::<usize>().unwrap() <= 9));
        assert!(FirstWord.score(" 7 <|im_end|>", "7").acc);
        assert!(FirstWord.score("7 3", "7").acc);
        assert!(!FirstWord.score("3 7", "7").acc);
        assert_eq!(FirstWord.score("", "7").score, -1.0);
    }
}
