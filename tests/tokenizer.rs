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
