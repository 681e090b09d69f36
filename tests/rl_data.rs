//! verl-layout JSONL prompt rows and their errors.
use entrl_rl::data::parse_jsonl;

#[test]
fn reads_verl_rows() {
    let text = r#"{"data_source": "math_dapo", "prompt": [{"role": "user", "content": "What is 6*7?"}], "reward_model": {"ground_truth": "42", "style": "rule"}}

{"prompt": "2+2?", "reward_model": {"ground_truth": 4}}
"#;
    let rows = parse_jsonl(text).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].messages[0].content, "What is 6*7?");
    assert_eq!(rows[0].ground_truth, "42");
    assert_eq!(rows[1].ground_truth, "4");
    assert_eq!(rows[1].data_source, "math_dapo");
}

#[test]
fn malformed_rows_name_the_line() {
    let e = parse_jsonl("{\"prompt\": \"a\", \"reward_model\": {\"ground_truth\": \"1\"}}\n{\"prompt\": \"b\"}\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("line 2: not a verl prompt row"), "{e}");
    let e = parse_jsonl(
        "{\"prompt\": [{\"role\": \"robot\", \"content\": \"x\"}], \"reward_model\": {\"ground_truth\": \"1\"}}",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 1: unknown message role \"robot\""), "{e}");
    let e = parse_jsonl("{\"prompt\": 5, \"reward_model\": {\"ground_truth\": \"1\"}}").unwrap_err().to_string();
    assert!(e.contains("prompt must be a string or a list"), "{e}");
    let e = parse_jsonl("{\"prompt\": \"x\", \"reward_model\": {\"ground_truth\": [1]}}").unwrap_err().to_string();
    assert!(e.contains("ground_truth must be a string or number"), "{e}");
    assert_eq!(parse_jsonl("\n\n").unwrap_err().to_string(), "no prompt rows");
}

#[test]
fn reads_verl_parquet() {
    // tests/data/verl_sample.parquet: written by pyarrow (snappy) in DAPO-Math-17k's column layout.
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/verl_sample.parquet");
    let rows = entrl_rl::data::read_prompts(&p).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].messages, vec![entrl_qwen3::Message::new("user", "What is 2 + 3? Answer: $Answer")]);
    assert_eq!((rows[1].data_source.as_str(), rows[1].ground_truth.as_str()), ("aime2024", "1"));
    assert_eq!(rows[2].ground_truth, "144");
    // Not parquet at all: a clear error naming the file.
    let bad = std::env::temp_dir().join(format!("entrl-bad-{}.parquet", std::process::id()));
    std::fs::write(&bad, b"not parquet").unwrap();
    let e = entrl_rl::data::read_prompts(&bad).unwrap_err().to_string();
    assert!(e.contains("not a readable parquet file") && e.contains("entrl-bad-"), "{e}");
    std::fs::remove_file(&bad).unwrap();
}

/// A file in a fresh temporary directory, removed with it.
struct Tmp(std::path::PathBuf);

impl Tmp {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("entrl-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ROW: &str = r#"{"prompt": "What is 6*7?", "reward_model": {"ground_truth": "42"}, "data_source": "s"}"#;

/// Files written by editors that put a UTF-8 byte-order mark first (and CRLF line ends) read as rows.
#[test]
fn a_byte_order_mark_is_skipped() {
    let d = Tmp::new("bom");
    let p = d.0.join("bom.jsonl");
    std::fs::write(&p, format!("\u{FEFF}{ROW}\r\n\r\n{ROW}\r\n")).unwrap();
    let rows = entrl_rl::data::read_prompts(&p).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].ground_truth.as_str(), rows[1].data_source.as_str()), ("42", "s"));
    assert_eq!(parse_jsonl(&format!("\u{FEFF}{ROW}")).unwrap().len(), 1);
    // A mark anywhere else is not skipped: that line is not JSON.
    let e = parse_jsonl(&format!("{ROW}\n\u{FEFF}{ROW}")).unwrap_err().to_string();
    assert!(e.starts_with("line 2: not JSON"), "{e}");
}

/// A line that is not UTF-8 is an error naming the file and the line, not a whole-file refusal.
#[test]
fn a_line_that_is_not_utf8_is_named() {
    let d = Tmp::new("latin1");
    let p = d.0.join("latin1.jsonl");
    let mut bytes = format!("{ROW}\n{ROW}\n").into_bytes();
    bytes.extend(b"{\"prompt\": \"caf\xe9\", \"reward_model\": {\"ground_truth\": \"1\"}}\n");
    std::fs::write(&p, bytes).unwrap();
    let e = entrl_rl::data::read_prompts(&p).unwrap_err();
    assert!(matches!(&e, entrl_rl::Error::Data { file: Some(f), line: Some(3), .. } if f == &p), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("latin1.jsonl: line 3: not UTF-8 text (invalid byte at offset 15 in the line)"), "{e}");
}

/// A FIFO named as the dataset is refused at once (reading it would wait for a writer forever), and so
/// is a directory; both name the path.
#[test]
#[cfg(unix)]
fn only_regular_files_are_read() {
    let d = Tmp::new("fifo");
    for name in ["prompts.jsonl", "prompts.parquet"] {
        let fifo = d.0.join(name);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let t0 = std::time::Instant::now();
        let e = entrl_rl::data::read_prompts(&fifo).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("not a regular file"), "{e}");
        assert!(t0.elapsed().as_secs() < 5);
    }
    let dir = d.0.join("dir.jsonl");
    std::fs::create_dir_all(&dir).unwrap();
    let e = entrl_rl::data::read_prompts(&dir).unwrap_err().to_string();
    assert!(e.contains("dir.jsonl") && (e.contains("not a regular file") || e.contains("directory")), "{e}");
    let e = entrl_rl::data::read_prompts(&d.0.join("missing.jsonl")).unwrap_err().to_string();
    assert!(e.contains("missing.jsonl"), "{e}");
}
