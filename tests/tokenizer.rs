//! The real Qwen3 tokenizer (../shared/tokenizers/qwen3) and its chat template.
use entrl_qwen3::{Message, Tokenizer};
use std::path::Path;

fn qwen3() -> Tokenizer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tokenizers/qwen3");
    Tokenizer::from_dir(&dir).unwrap()
}

#[test]
fn encodes_and_decodes_text_and_special_tokens() {
    let t = qwen3();
    assert!(t.vocab_size() >= 151_643 + 26, "{}", t.vocab_size());
    let text = "Solve 12 + 30. Answer: \\boxed{42} — ünïcode ✓";
    let ids = t.encode(text).unwrap();
    assert_eq!(t.decode(&ids, false).unwrap(), text);
    let im_start = t.token_id("<|im_start|>").unwrap();
    let im_end = t.token_id("<|im_end|>").unwrap();
    assert_eq!((im_start, im_end), (151_644, 151_645));
    assert_eq!(t.encode("<|im_start|>user").unwrap()[0], im_start, "special tokens are atomic");
    assert!(t.stop_ids().contains(&im_end));
}

#[test]
fn chat_template_renders_the_qwen3_prompt_forms() {
    let t = qwen3();
    let msgs = [Message::new("system", "Be brief."), Message::new("user", "What is 2+2?")];
    let p = t.apply_chat_template(&msgs, true).unwrap();
    assert_eq!(
        p,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let no_gen = t.apply_chat_template(&msgs[1..], false).unwrap();
    assert_eq!(no_gen, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    // A finished assistant turn after the last user query gets the (empty) think block.
    let full = [Message::new("user", "Hi"), Message::new("assistant", "Hello!")];
    let s = t.apply_chat_template(&full, false).unwrap();
    assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n");
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let e = Tokenizer::from_dir(Path::new("/nonexistent-entrl")).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("cannot load tokenizer"), "{e}");
}

/// A tokenizer whose chat template is `template` (the Qwen3 vocabulary).
fn with_template(template: &str) -> Tokenizer {
    let dir = std::env::temp_dir().join(format!("entrl-template-{}-{}", std::process::id(), template.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tokenizers/qwen3/tokenizer.json");
    std::fs::copy(src, dir.join("tokenizer.json")).unwrap();
    let cfg = serde_json::json!({ "chat_template": template, "eos_token": "<|im_end|>" });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let t = Tokenizer::from_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    t
}

#[test]
fn a_runaway_template_stops_at_its_limits() {
    let msgs = [Message::new("user", &"x".repeat(1000))];
    // 10^8 iterations (20 s and 5.3 GB before the limits): out of fuel
    let spin = with_template("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}");
    let e = spin.apply_chat_template(&msgs, true).unwrap_err().to_string();
    assert!(e.contains("chat template ran more than 20000000 instructions"), "{e}");
    // few instructions, much text: 100,000 copies of a 1000-byte message is 100 MB, over the 64 MiB cap
    let wide = with_template("{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}");
    let e = wide.apply_chat_template(&msgs, true).unwrap_err().to_string();
    assert!(e.contains("chat template output exceeds 64 MiB"), "{e}");
    // the same template under the cap renders
    let fine = with_template("{% for i in range(1000) %}{{ messages[0].content }}{% endfor %}");
    assert_eq!(fine.apply_chat_template(&msgs, true).unwrap().len(), 1_000_000);
}

#[test]
fn a_long_real_conversation_renders_far_from_the_limits() {
    // 20,000 turns of Qwen3's own template: about a million fuel of the 20 million.
    let t = qwen3();
    let turns: Vec<Message> = (0..20_000)
        .map(|i| Message::new(if i % 2 == 0 { "user" } else { "assistant" }, &format!("turn {i}: some words")))
        .collect();
    let s = t.apply_chat_template(&turns, true).unwrap();
    assert!(s.starts_with("<|im_start|>user\nturn 0: some words<|im_end|>\n"));
    assert!(s.ends_with("<|im_start|>assistant\n"), "{}", &s[s.len() - 100..]);
}
