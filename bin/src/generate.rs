//! `entrl generate --model DIR --prompt "..."`: chat-templated prompt, KV-cache generation, text printed
//! as it is produced.
use entrl_qwen3::{generate, Message, Qwen3, Request, SamplingParams, Tokenizer};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// HF model folder (config.json, safetensors, tokenizer.json, tokenizer_config.json).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    /// Tokenizer folder, if not the model folder.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Feed the prompt as raw text instead of a chat user turn.
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu or cuda[:N] (default: the first GPU if there is one)
    #[arg(long)]
    device: Option<String>,
}

pub fn run(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let device = match &a.device {
        Some(d) => crate::verify::parse_device(d)?,
        None => entrl_engine::Device::best().0,
    };
    let dtype = device.default_dtype();
    let tok = Tokenizer::from_dir(a.tokenizer.as_ref().unwrap_or(&a.model))?;
    let model = Qwen3::load(&a.model, dtype, &device)?;
    let text =
        if a.raw { a.prompt.clone() } else { tok.apply_chat_template(&[Message::new("user", &a.prompt)], true)? };
    let prompt = tok.encode(&text)?;
    let params = SamplingParams { temperature: a.temperature, top_p: a.top_p, top_k: a.top_k };
    let req = Request { prompt, max_new_tokens: a.max_new_tokens, seed: a.seed };
    let (mut ids, mut printed) = (Vec::new(), 0usize);
    let mut out = std::io::stdout();
    let t0 = std::time::Instant::now();
    let gen = generate(&model, &[req], &params, tok.stop_ids(), |_, t| {
        ids.push(t);
        // Decode the whole tail each time so multi-byte characters print once complete.
        if let Ok(s) = tok.decode(&ids, true) {
            if s.len() > printed && s.is_char_boundary(printed) {
                let _ = write!(out, "{}", &s[printed..]);
                let _ = out.flush();
                printed = s.len();
            }
        }
    })?;
    let n = gen[0].tokens.len();
    eprintln!("\n[{n} tokens in {:.2} s on {device}, finish: {:?}]", t0.elapsed().as_secs_f64(), gen[0].finish);
    Ok(ExitCode::SUCCESS)
}
