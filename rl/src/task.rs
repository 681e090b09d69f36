//! The built-in verifiable task that `entrl train` learns with no arguments: single-digit addition
//! ("3 + 4 =" → "7", sums up to 9) with a word-level tokenizer made with the tokenizers crate and a tiny
//! Qwen3 shape. The reward checks the first word of the response, so a random-init policy (uniform over
//! the 19-token vocabulary) is right about 1 time in 19, and RL alone has signal from the first step.
//!
//! The built-in reasoning task `builtin:chain` (a laptop-sized stand-in for math reasoning): multi-step
//! arithmetic ("3 + 4 + 2 - 5 =", 2 to 4 operations on single digits, every running result in 0..=19)
//! answered by a chain of intermediate results and a boxed answer,
//! "3 + 4 = 7 , 7 + 2 = 9 , 9 - 5 = 4 , \boxed{ 4 }" (15 to 28 tokens with the end token). Its tokenizer
//! is the addition vocabulary plus `10`..`19`, `-`, `,`, `\boxed{` and `}` (33 tokens); its reward is
//! the repository's `\boxed{}` verifier ([`crate::reward::BoxedMath`]); the worked solutions
//! ([`chain_solution`]) are the supervised warm start's targets (`train.warmup_sft_steps`).
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

/// `data_source` of the chain prompts (its verifier is [`crate::reward::BoxedMath`]).
pub const CHAIN_SOURCE: &str = "entrl/chain";
/// `data.train` / `data.eval` value naming the chain task.
pub const CHAIN_SPEC: &str = "builtin:chain";
/// Words the chain task adds to the addition vocabulary.
const CHAIN_WORDS: [&str; 14] = ["10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "-", ",", "\\boxed{", "}"];
/// Largest running result of a chain.
pub const CHAIN_MAX: u32 = 19;
/// Training prompts of `builtin:chain` (drawn with [`CHAIN_TRAIN_SEED`], none of them held out).
pub const CHAIN_TRAIN_PROMPTS: usize = 4096;
/// Held-out prompts of `builtin:chain` (distinct, drawn with [`CHAIN_EVAL_SEED`]).
pub const CHAIN_EVAL_PROMPTS: usize = 200;
pub const CHAIN_TRAIN_SEED: u64 = 0xC4A1_7EA1;
pub const CHAIN_EVAL_SEED: u64 = 0xC4A1_E7A1;

/// Qwen3's chat layout with space-separated words (the word-level tokenizer splits on whitespace).
const TEMPLATE: &str = "{% for m in messages %}<|im_start|> {{ m.role }} {{ m.content }} <|im_end|> {% endfor %}\
{% if add_generation_prompt %}<|im_start|> assistant {% endif %}";

/// The built-in tokenizer: 19 tokens, `<|im_end|>` ends a response.
pub fn builtin_tokenizer() -> Tokenizer {
    word_tokenizer(&[])
}

/// The chain task's tokenizer: the built-in one's 19 tokens (same ids) and [`CHAIN_WORDS`], 33 in all.
pub fn chain_tokenizer() -> Tokenizer {
    word_tokenizer(&CHAIN_WORDS)
}

/// The tokenizer `model.path = "builtin"` gets: the chain tokenizer when either data set is the chain task.
pub fn builtin_tokenizer_for(train: &str, eval: &str) -> Tokenizer {
    if train == CHAIN_SPEC || eval == CHAIN_SPEC {
        chain_tokenizer()
    } else {
        builtin_tokenizer()
    }
}

fn word_tokenizer(extra: &[&str]) -> Tokenizer {
    let vocab: HashMap<String, u32> = SPECIAL
        .iter()
        .chain(WORDS.iter())
        .chain(extra.iter())
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect();
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

/// One chain problem: the start value and each (operator, operand) step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub start: u32,
    pub steps: Vec<(char, u32)>,
}

impl Chain {
    /// A random chain of `ops` operations from `rng` (splitmix64 state): operands 0..=9, `+` or `-` each
    /// with probability 1/2, the other one where the running result would leave 0..=[`CHAIN_MAX`].
    fn draw(rng: &mut u64, ops: usize) -> Self {
        let start = (splitmix(rng) % 10) as u32;
        let mut v = start;
        let mut steps = Vec::with_capacity(ops);
        for _ in 0..ops {
            let b = (splitmix(rng) % 10) as u32;
            let mut op = if splitmix(rng).is_multiple_of(2) { '+' } else { '-' };
            if op == '+' && v + b > CHAIN_MAX {
                op = '-';
            } else if op == '-' && b > v {
                op = '+';
            }
            v = if op == '+' { v + b } else { v - b };
            steps.push((op, b));
        }
        Chain { start, steps }
    }

    /// The running results after each step (the last is the answer).
    pub fn results(&self) -> Vec<u32> {
        let mut v = self.start as i64;
        self.steps
            .iter()
            .map(|&(op, b)| {
                v = if op == '+' { v + b as i64 } else { v - b as i64 };
                v as u32
            })
            .collect()
    }

    pub fn answer(&self) -> u32 {
        *self.results().last().unwrap_or(&self.start)
    }

    /// "3 + 4 + 2 - 5 =".
    pub fn prompt(&self) -> String {
        let mut s = self.start.to_string();
        for (op, b) in &self.steps {
            s.push_str(&format!(" {op} {b}"));
        }
        s + " ="
    }

    /// "3 + 4 = 7 , 7 + 2 = 9 , 9 - 5 = 4 , \boxed{ 4 }".
    pub fn solution(&self) -> String {
        let mut s = String::new();
        let mut a = self.start;
        for (&(op, b), r) in self.steps.iter().zip(self.results()) {
            s.push_str(&format!("{a} {op} {b} = {r} , "));
            a = r;
        }
        s + &format!("\\boxed{{ {a} }}")
    }

    /// Parse a prompt written by [`Chain::prompt`] (None when it is not one).
    pub fn parse(prompt: &str) -> Option<Self> {
        let words: Vec<&str> = prompt.split_whitespace().collect();
        let (last, body) = words.split_last()?;
        if *last != "=" || body.len() < 3 || body.len() % 2 == 0 {
            return None;
        }
        let num = |w: &str| w.parse::<u32>().ok().filter(|&n| n <= 9);
        let start = num(body[0])?;
        let steps = body[1..]
            .chunks(2)
            .map(|p| match p[0] {
                "+" => num(p[1]).map(|b| ('+', b)),
                "-" => num(p[1]).map(|b| ('-', b)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let c = Chain { start, steps };
        let mut v = start as i64;
        for &(op, b) in &c.steps {
            v = if op == '+' { v + b as i64 } else { v - b as i64 };
            if !(0..=CHAIN_MAX as i64).contains(&v) {
                return None;
            }
        }
        Some(c)
    }
}

/// splitmix64: the chain generator's random numbers (stable across platforms and crate versions).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `count` chains drawn from `seed` (2, 3 or 4 operations, uniformly), skipping any whose prompt is in
/// `exclude`, and repeats when `distinct`.
pub fn chain_problems(seed: u64, count: usize, exclude: &[Chain], distinct: bool) -> Vec<Chain> {
    use std::collections::HashSet;
    let excluded: HashSet<String> = exclude.iter().map(Chain::prompt).collect();
    let mut seen = HashSet::new();
    let mut rng = seed;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let ops = 2 + (splitmix(&mut rng) % 3) as usize;
        let c = Chain::draw(&mut rng, ops);
        let p = c.prompt();
        if excluded.contains(&p) || (distinct && !seen.insert(p)) {
            continue;
        }
        out.push(c);
    }
    out
}

/// The held-out chains: [`CHAIN_EVAL_PROMPTS`] distinct problems from [`CHAIN_EVAL_SEED`].
pub fn chain_eval_problems() -> Vec<Chain> {
    chain_problems(CHAIN_EVAL_SEED, CHAIN_EVAL_PROMPTS, &[], true)
}

/// The training chains: [`CHAIN_TRAIN_PROMPTS`] problems from `seed` (repeats allowed), none held out.
pub fn chain_train_problems(seed: u64) -> Vec<Chain> {
    chain_problems(seed, CHAIN_TRAIN_PROMPTS, &chain_eval_problems(), false)
}

/// Prompt rows of chains (ground truth: the answer).
pub fn chain_rows(chains: &[Chain]) -> Vec<PromptRow> {
    chains
        .iter()
        .map(|c| PromptRow {
            messages: vec![Message::new("user", &c.prompt())],
            ground_truth: c.answer().to_string(),
            data_source: CHAIN_SOURCE.into(),
        })
        .collect()
}

/// The worked solution of a chain prompt row (None when its prompt is not a chain).
pub fn chain_solution(row: &PromptRow) -> Option<String> {
    Chain::parse(&row.messages.last()?.content).map(|c| c.solution())
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

    #[test]
    fn chain_generator_writes_valid_chains() {
        let train = chain_train_problems(CHAIN_TRAIN_SEED);
        let eval = chain_eval_problems();
        assert_eq!((train.len(), eval.len()), (CHAIN_TRAIN_PROMPTS, CHAIN_EVAL_PROMPTS));
        assert_eq!(train, chain_train_problems(CHAIN_TRAIN_SEED), "deterministic");
        let held: std::collections::HashSet<String> = eval.iter().map(Chain::prompt).collect();
        assert_eq!(held.len(), eval.len(), "held-out prompts are distinct");
        assert!(train.iter().all(|c| !held.contains(&c.prompt())), "training and held-out sets are disjoint");
        for ops in 2..=4 {
            assert!(train.iter().any(|c| c.steps.len() == ops));
        }
        for c in train.iter().chain(&eval) {
            assert!((2..=4).contains(&c.steps.len()) && c.start <= 9);
            // The answer is the arithmetic of the prompt, evaluated left to right.
            let mut words = c.prompt().split_whitespace().map(String::from).collect::<Vec<_>>();
            assert_eq!(words.pop().as_deref(), Some("="));
            let mut v: i64 = words[0].parse().unwrap();
            for p in words[1..].chunks(2) {
                let b: i64 = p[1].parse().unwrap();
                v = if p[0] == "+" { v + b } else { v - b };
                assert!((0..=CHAIN_MAX as i64).contains(&v));
            }
            assert_eq!(v, c.answer() as i64);
            assert_eq!(Chain::parse(&c.prompt()).as_ref(), Some(c));
            // Each step of the worked solution starts from the previous result and is correct.
            let sol = c.solution();
            let parts: Vec<&str> = sol.split(" , ").collect();
            assert_eq!(parts.len(), c.steps.len() + 1);
            assert_eq!(*parts.last().unwrap(), format!("\\boxed{{ {} }}", c.answer()));
            let mut prev = c.start as i64;
            for step in &parts[..parts.len() - 1] {
                let w: Vec<&str> = step.split(' ').collect();
                let (a, b, r): (i64, i64, i64) = (w[0].parse().unwrap(), w[2].parse().unwrap(), w[4].parse().unwrap());
                assert_eq!(a, prev);
                assert_eq!(r, if w[1] == "+" { a + b } else { a - b });
                prev = r;
            }
            assert_eq!(prev, c.answer() as i64);
        }
        let c = Chain { start: 3, steps: vec![('+', 4), ('+', 2), ('-', 5)] };
        assert_eq!(c.prompt(), "3 + 4 + 2 - 5 =");
        assert_eq!(c.solution(), "3 + 4 = 7 , 7 + 2 = 9 , 9 - 5 = 4 , \\boxed{ 4 }");
        assert_eq!(Chain::parse("3 - 4 + 2 ="), None, "a negative running result is not a chain");
        assert_eq!(Chain::parse("3 + 4"), None);
    }

    #[test]
    fn chain_solutions_tokenize_and_decode_back() {
        let tok = chain_tokenizer();
        assert_eq!(tok.vocab_size(), 33);
        let unk = tok.token_id("<unk>").unwrap();
        // The addition task's ids are unchanged, so its prompts read the same with either tokenizer.
        let add = builtin_tokenizer();
        for w in WORDS {
            assert_eq!(tok.token_id(w), add.token_id(w));
        }
        let rows = chain_rows(&chain_eval_problems());
        let mut lens = Vec::new();
        for row in &rows {
            let prompt = tok.apply_chat_template(&row.messages, true).unwrap();
            assert!(!tok.encode(&prompt).unwrap().contains(&unk), "{prompt:?}");
            let sol = chain_solution(row).unwrap();
            let ids = tok.encode(&sol).unwrap();
            assert!(!ids.contains(&unk), "{sol:?} → {ids:?}");
            assert_eq!(tok.decode(&ids, true).unwrap(), sol);
            lens.push(ids.len() + 1); // + <|im_end|>
        }
        assert!(lens.iter().all(|&l| (10..=40).contains(&l)), "{lens:?}");
        assert!(matches!(builtin_tokenizer_for(CHAIN_SPEC, "").vocab_size(), 33));
        assert!(matches!(builtin_tokenizer_for("builtin", "builtin").vocab_size(), 19));
    }

    #[test]
    fn chain_verifier_checks_the_boxed_answer() {
        let v = crate::reward::verifier_for(CHAIN_SOURCE);
        let c = Chain { start: 3, steps: vec![('+', 4), ('+', 2), ('-', 5)] };
        let gt = c.answer().to_string();
        assert!(v.score(&c.solution(), &gt).acc);
        assert!(v.score("\\boxed{ 4 }", &gt).acc, "only the boxed answer counts");
        assert!(v.score("3 + 4 = 7 , \\boxed{ 9 } , \\boxed{ 4 }", &gt).acc, "the last box counts");
        for wrong in [
            "3 + 4 = 7 , 7 + 2 = 9 , 9 - 5 = 4 , \\boxed{ 5 }",
            "3 + 4 = 7 , 7 + 2 = 9 , 9 - 5 = 4 ,",
            "3 + 4 = 7 , 7 + 2 = 9 , 9 - 5 = 4 , \\boxed{ 4",
            "\\boxed{ 14 }",
            "\\boxed{ }",
            "4",
            "",
        ] {
            let s = v.score(wrong, &gt);
            assert!(!s.acc && s.score == -1.0, "{wrong:?} scored {s:?}");
        }
    }
}
