//! Long prompts with the real Qwen3 tokenizer (../shared/tokenizers/qwen3): the byte bound that decides a
//! huge prompt without tokenizing it, and the suffix cut of `truncate-left` giving exactly the last
//! max_prompt_len ids of the whole prompt.
use entrl_qwen3::{Message, Tokenizer};
use entrl_rl::config::LongPrompts;
use entrl_rl::data::PromptRow;
use entrl_rl::rollout::{ByteBound, PromptCounts, PromptEncoder};
use std::path::Path;
use std::time::Instant;

fn qwen3() -> Tokenizer {
    Tokenizer::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tokenizers/qwen3")).unwrap()
}

fn row(content: String, source: &str) -> PromptRow {
    PromptRow { messages: vec![Message::new("user", &content)], ground_truth: "1".into(), data_source: source.into() }
}

/// The ids the whole prompt tokenizes to, as verl tokenizes it before `input_ids[:, -max_length:]`.
fn whole_ids(tok: &Tokenizer, r: &PromptRow) -> Vec<u32> {
    tok.encode(&tok.apply_chat_template(&r.messages, true).unwrap()).unwrap()
}

/// Deterministic filler text of about `bytes` bytes in one of several shapes.
fn text(shape: &str, bytes: usize) -> String {
    let mut s = String::new();
    let mut i = 0u64;
    while s.len() < bytes {
        i += 1;
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        match shape {
            // English prose and formulas over many lines.
            "prose" => {
                s += &format!(
                    "Let a_{i} = {x} and b = {}; then a_{i}² + b ≤ {}. Don't forget ∑ and the case n={}.\n",
                    x % 97,
                    x % 1013,
                    i % 7
                )
            }
            // One line of words and numbers: only spaces to cut at.
            "one-line" => s += &format!("term{} of {} equals {}, so ", x % 1000, i, x % 77),
            // Chinese with line breaks and no spaces: only line breaks to cut at.
            "cjk" => s += &format!("第{i}题：求{}的平方根。答案是{}。\n", x % 10_000, x % 100),
            // Whitespace runs, tabs, CRLF, code-like punctuation and an emoji.
            _ => s += &format!("fn f{i}(x: u32) -> u32 {{\r\n\t\tx   * {x} // 😀 ok\r\n}}\n\n   "),
        }
    }
    s
}

#[test]
fn qwen3_has_a_byte_bound_and_the_cut_keeps_exactly_the_last_ids() {
    let tok = qwen3();
    let t0 = Instant::now();
    let bound = ByteBound::of(&tok).expect("Qwen3's byte-level BPE spells out its text");
    eprintln!("longest Qwen3 token: {} bytes, found in {:.2} s", bound.longest_token_bytes, t0.elapsed().as_secs_f64());
    assert!((16..=1024).contains(&bound.longest_token_bytes), "{bound:?}");
    for max in [64usize, 200] {
        let enc = PromptEncoder::new(&tok, max, LongPrompts::TruncateLeft);
        let limit = enc.byte_limit().unwrap();
        assert_eq!(limit, max * bound.longest_token_bytes * 4);
        for shape in ["prose", "one-line", "cjk", "code"] {
            let r = row(text(shape, 300_000.max(limit + 10_000)), "s");
            assert!(r.messages[0].content.len() > limit, "the cut path must run");
            let set = enc.encode(std::slice::from_ref(&r)).unwrap();
            assert_eq!(set.counts, PromptCounts { dropped: 0, truncated: 1, empty: 0 }, "{shape}");
            let whole = whole_ids(&tok, &r);
            assert_eq!(*set.prompts[0].ids, whole[whole.len() - max..], "{shape}, max_prompt_len {max}");
        }
    }
}

/// A prompt with no line break or word gap near the cut is refused under truncate-left (cutting inside one
/// long word could change its tokens), decided by bytes under drop and error.
#[test]
fn a_huge_prompt_without_a_cut_point_is_refused_clearly() {
    let tok = qwen3();
    let rows = vec![row("What is 2 + 2?".into(), "small"), row("a".repeat(200_000), "blob")];
    let e = PromptEncoder::new(&tok, 32, LongPrompts::TruncateLeft).encode(&rows).unwrap_err().to_string();
    assert!(e.starts_with("prompt row 2 (data source \"blob\"): ") && e.contains("no line break or space"), "{e}");
    // Why not cut anywhere: inside one long word the tokens at the end depend on where the word starts.
    let word = "a".repeat(5000);
    let tails: Vec<Vec<u32>> =
        (0..4).map(|c| tok.encode(&word[c..]).unwrap()).map(|ids| ids[ids.len() - 32..].to_vec()).collect();
    assert!(tails.windows(2).any(|w| w[0] != w[1]), "a cut inside a word changed no tail ids");
    let set = PromptEncoder::new(&tok, 32, LongPrompts::Drop).encode(&rows).unwrap();
    assert_eq!((set.prompts.len(), set.counts.dropped), (1, 1));
}

/// A multi-megabyte prompt line is decided from its size (drop, error) or from a suffix (truncate-left):
/// never tokenized whole, which took seconds and gigabytes.
#[test]
fn a_multi_megabyte_prompt_is_handled_quickly() {
    let tok = qwen3();
    let rows = vec![row("What is 2 + 2?".into(), "small"), row(text("prose", 8 << 20), "huge")];
    let enc = |p| PromptEncoder::new(&tok, 1024, p);
    let t0 = Instant::now();
    let truncate = enc(LongPrompts::TruncateLeft);
    let set = truncate.encode(&rows).unwrap();
    assert_eq!(set.counts.truncated, 1);
    assert_eq!(set.prompts[1].ids.len(), 1024);
    let tail = tok.decode(&set.prompts[1].ids, false).unwrap();
    assert!(tail.ends_with("<|im_end|>\n<|im_start|>assistant\n"), "{tail:?}");
    let set = enc(LongPrompts::Drop).encode(&rows).unwrap();
    assert_eq!((set.prompts.len(), set.counts.dropped), (1, 1));
    let e = enc(LongPrompts::Error).encode(&rows).unwrap_err().to_string();
    assert!(
        e.starts_with("prompt row 2 (data source \"huge\"): ") && e.contains("bytes after the chat template"),
        "{e}"
    );
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("three policies on an 8 MiB prompt: {secs:.2} s");
    assert!(secs < 10.0, "{secs:.2} s");
}
