//! Rule-based math rewards (dapo.md §5, §6): a line-by-line port of verl's
//! `verl/utils/reward_score/math_dapo.py` (itself adapted from lm-evaluation-harness' `hendrycks_math/utils.py`),
//! the soft overlong penalty of `verl/workers/reward_manager/dapo.py`, entrl's `\boxed{}` verifier, and the
//! data-source dispatch of `verl/utils/reward_score/__init__.py::default_compute_score`.
//!
//! The Python uses `re`; every pattern here is reproduced with plain string code that follows the same
//! leftmost, non-overlapping, backtracking semantics as `re.sub` / `re.findall`, including `.` not matching `\n`
//! (so the `$…$`, `\text{…}` and `\boxed{…}` rewrites act within a line), lazy vs greedy quantifiers, and the
//! fact that `re.sub` resumes scanning after each replaced match. `str.isdigit`, `str.strip` and `\s` follow
//! Python's Unicode definitions (`isdigit` table from Python 3.11's Unicode 14 database). Strings are sliced by
//! characters (code points), like Python's `s[-300:]`.
//!
//! [`verifier_by_choice`] applies `reward.verifier`: the dispatch, or one verifier for every source.
//!
//! Not ported: `pause_tokens_index` of `is_correct_strict_box` (unused by DAPO). Where Python would raise
//! (`gt_need_extract` with no `\boxed{}` in the ground truth), [`is_correct_minerva`] answers "incorrect".

use crate::config::VerifierChoice;

/// Result of scoring one response, as returned by verl's `math_dapo.compute_score`.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// +1.0 when correct, -1.0 otherwise.
    pub score: f64,
    /// Whether the prediction matched the ground truth.
    pub acc: bool,
    /// The prediction that was compared (normalised in Minerva/boxed mode, raw box content in strict mode,
    /// `"[INVALID]"` when nothing could be extracted).
    pub pred: String,
}

impl Score {
    fn from_verdict(acc: bool, pred: String) -> Self {
        Score { score: if acc { 1.0 } else { -1.0 }, acc, pred }
    }
}

/// What verl reports when no answer could be extracted.
const INVALID: &str = "[INVALID]";

/// `SUBSTITUTIONS` of math_dapo.py, applied in order with `str.replace`.
const SUBSTITUTIONS: [(&str, &str); 10] = [
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
];

/// `REMOVED_EXPRESSIONS` of math_dapo.py, deleted in order. Python's `"\\text{\ns}"` and `"\\text{\n}"` are not
/// raw strings: they contain a real newline.
const REMOVED_EXPRESSIONS: [&str; 41] = [
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    "\"",
    "\\dots",
];

/// Normalise a final answer (math_dapo.py `normalize_final_answer`): keep the text after the last `=`, apply
/// `SUBSTITUTIONS` and `REMOVED_EXPRESSIONS`, keep the first `$…$` span of each line, unwrap `\text{}`,
/// `\textbf{}`, `\overline{}` (innermost-first, lazy) and `\boxed{}` (greedy), expand `frac12` → `frac{1}{2}` and
/// `sqrt2` → `sqrt{2}`, drop `$`, drop commas of an all-digit answer, and strip whitespace.
pub fn normalize_final_answer(s: &str) -> String {
    // final_answer.split("=")[-1]
    let mut a = s.rsplit('=').next().unwrap_or("").to_string();
    for (before, after) in SUBSTITUTIONS {
        a = a.replace(before, after);
    }
    for expr in REMOVED_EXPRESSIONS {
        a = a.replace(expr, "");
    }
    // re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", ...)
    a = keep_first_dollar_span(&a);
    // re.sub(r"(\\text\{)(.*?)(\})", "\\2", ...) and the textbf / overline / boxed variants
    a = unwrap_command(&a, "\\text{", false);
    a = unwrap_command(&a, "\\textbf{", false);
    a = unwrap_command(&a, "\\overline{", false);
    a = unwrap_command(&a, "\\boxed{", true);
    // re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", ...) and re.sub(r"(sqrt)([^{])", "sqrt{\\2}", ...)
    a = expand_shorthand(&a, "frac", 2);
    a = expand_shorthand(&a, "sqrt", 1);
    a = a.replace('$', "");
    let no_commas = a.replace(',', "");
    if py_str_isdigit(&no_commas) {
        a = no_commas;
    }
    py_strip(&a).to_string()
}

/// The last `\boxed{…}` of `s` including the command and its braces (math_dapo.py `last_boxed_only_string`):
/// the last occurrence of `\boxed{` (rfind), then braces are counted up to the matching `}`. `None` when there
/// is no `\boxed{` or the last one is never closed (an earlier, closed box is not used).
pub fn last_boxed_only_string(s: &str) -> Option<String> {
    let idx = s.rfind("\\boxed{")?;
    let mut open = 0usize;
    for (i, b) in s.bytes().enumerate().skip(idx) {
        match b {
            b'{' => open += 1,
            b'}' => {
                // The scan starts at `\boxed{`, so a '{' has always been counted before any '}'.
                open -= 1;
                if open == 0 {
                    return Some(s[idx..=i].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// The content of `\boxed{content}` (math_dapo.py `remove_boxed`); `None` where the Python asserts, i.e. when
/// `s` does not start with `\boxed{` or does not end with `}`.
pub fn remove_boxed(s: &str) -> Option<String> {
    s.strip_prefix("\\boxed{").and_then(|rest| rest.strip_suffix('}')).map(str::to_string)
}

/// math_dapo.py `is_correct_minerva` with its default pattern `(?i)Answer\s*:\s*([^\n]+)`: the capture of the
/// last match (else `"[INVALID]"`) is normalised and compared with the normalised ground truth (first extracted
/// from its last `\boxed{}` when `gt_need_extract`). Returns (correct, normalised prediction).
pub fn is_correct_minerva(solution: &str, gt: &str, gt_need_extract: bool) -> (bool, String) {
    let extracted = last_answer_capture(solution).unwrap_or(INVALID);
    let pred = normalize_final_answer(extracted);
    let gt = if gt_need_extract {
        // Python raises (remove_boxed(None)) when the ground truth has no box; count that as incorrect.
        match last_boxed_only_string(gt).and_then(|b| remove_boxed(&b)) {
            Some(inner) => normalize_final_answer(&inner),
            None => return (false, pred),
        }
    } else {
        normalize_final_answer(gt)
    };
    (pred == gt, pred)
}

/// math_dapo.py `is_correct_strict_box` (without pause tokens): the last `\boxed{}` within the final 100
/// characters, its raw content compared with the raw ground truth. Returns (correct, raw prediction).
pub fn is_correct_strict_box(pred: &str, gt: &str) -> (bool, String) {
    let tail = last_chars(pred, 100);
    let extracted = last_boxed_only_string(tail).and_then(|b| remove_boxed(&b)).unwrap_or_else(|| INVALID.to_string());
    (extracted == gt, extracted)
}

/// math_dapo.py `verify`: strict box or Minerva check. Returns (correct, prediction).
pub fn verify(solution: &str, answer: &str, strict_box_verify: bool) -> (bool, String) {
    if strict_box_verify {
        is_correct_strict_box(solution, answer)
    } else {
        is_correct_minerva(solution, answer, false)
    }
}

/// math_dapo.py `compute_score`: keep the last 300 characters of the solution, [`verify`], +1 / -1.
pub fn compute_score(solution: &str, ground_truth: &str, strict_box_verify: bool) -> Score {
    let (acc, pred) = verify(last_chars(solution, 300), ground_truth, strict_box_verify);
    Score::from_verdict(acc, pred)
}

/// entrl's `\boxed{}` verifier (dapo.md §5 "entrl `\boxed{}` verifier"): the last `\boxed{…}` anywhere in the
/// solution (rfind, brace matched), both it and the ground truth normalised with [`normalize_final_answer`],
/// compared; no (closed) box → wrong with pred `"[INVALID]"`. +1 / -1.
pub fn boxed_score(solution: &str, ground_truth: &str) -> Score {
    match last_boxed_only_string(solution).and_then(|b| remove_boxed(&b)) {
        Some(inner) => {
            let pred = normalize_final_answer(&inner);
            Score::from_verdict(pred == normalize_final_answer(ground_truth), pred)
        }
        None => Score::from_verdict(false, INVALID.to_string()),
    }
}

/// DAPO soft overlong penalty (reward_manager/dapo.py): `expected = max_response_len - buffer_len`,
/// `exceed = response_len - expected`, `min(-exceed / buffer_len * factor, 0)`; added to the score. With
/// max 8192, buffer 4096, factor 1: 0 up to 4096 tokens, linear to -1 at 8192. Computed in f64 (verl ends up in
/// a float32 reward tensor); `buffer_len == 0` divides by zero like the torch code (-inf, or NaN at exceed 0).
pub fn overlong_penalty(response_len: usize, max_response_len: usize, buffer_len: usize, factor: f64) -> f64 {
    let expected = max_response_len as i64 - buffer_len as i64;
    let exceed = response_len as i64 - expected;
    let penalty = (-exceed) as f64 / buffer_len as f64 * factor;
    // Python's min(penalty, 0) keeps its first argument unless 0 is strictly smaller.
    if 0.0 < penalty {
        0.0
    } else {
        penalty
    }
}

/// A pluggable answer verifier for one data source.
pub trait Verifier: Send + Sync {
    /// Score one decoded response against its ground truth.
    fn score(&self, response: &str, ground_truth: &str) -> Score;
    /// A short name for logs.
    fn name(&self) -> &str;
}

/// Picks the verifier of a data source.
pub type VerifierFor = dyn Fn(&str) -> Box<dyn Verifier>;

/// verl's `math_dapo.compute_score` ("Answer:" line, or the strict last-100-characters box check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MathDapo {
    pub strict: bool,
}

impl Verifier for MathDapo {
    fn score(&self, response: &str, ground_truth: &str) -> Score {
        compute_score(response, ground_truth, self.strict)
    }

    fn name(&self) -> &str {
        if self.strict {
            "math_dapo_strict"
        } else {
            "math_dapo"
        }
    }
}

/// entrl's normalised last-`\boxed{}` verifier, [`boxed_score`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoxedMath;

impl Verifier for BoxedMath {
    fn score(&self, response: &str, ground_truth: &str) -> Score {
        boxed_score(response, ground_truth)
    }

    fn name(&self) -> &str {
        "boxed_math"
    }
}

/// The verifier for a data source, dispatching like verl's `default_compute_score`: `math_dapo`, `math`,
/// `math_dapo_reasoning` and names starting with `aime` → [`MathDapo`] (non-strict); entrl's built-in task
/// ([`crate::task::BUILTIN_SOURCE`]) → [`crate::task::FirstWord`]; anything else (verl would use other scorers
/// or raise) → [`BoxedMath`].
pub fn verifier_for(data_source: &str) -> Box<dyn Verifier> {
    if matches!(data_source, "math_dapo" | "math" | "math_dapo_reasoning") || data_source.starts_with("aime") {
        Box::new(MathDapo { strict: false })
    } else if data_source == crate::task::BUILTIN_SOURCE {
        Box::new(crate::task::FirstWord)
    } else {
        Box::new(BoxedMath)
    }
}

/// The verifier `reward.verifier` picks for a data source: `auto` dispatches by source ([`verifier_for`]);
/// `boxed`, `answer-line` and `strict-box` use [`BoxedMath`], [`MathDapo`] and [`MathDapo`] with
/// `strict` for every source (the built-in task's included).
pub fn verifier_by_choice(choice: VerifierChoice, data_source: &str) -> Box<dyn Verifier> {
    match choice {
        VerifierChoice::Auto => verifier_for(data_source),
        VerifierChoice::Boxed => Box::new(BoxedMath),
        VerifierChoice::AnswerLine => Box::new(MathDapo { strict: false }),
        VerifierChoice::StrictBox => Box::new(MathDapo { strict: true }),
    }
}

/// Python `s[-n:]` for `n > 0`: the last `n` characters (code points), or all of `s`.
fn last_chars(s: &str, n: usize) -> &str {
    match s.char_indices().rev().nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &s[i..],
        _ => s,
    }
}

/// `re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", s)`. `.` stops at `\n`, so each match lies within one line and
/// spans it from its start (a line with two `$` matches at its first character) to its end (greedy `(.*)`): every
/// line holding at least two `$` becomes `$` + the text between its first two `$` + `$`; other lines stay.
fn keep_first_dollar_span(s: &str) -> String {
    let lines: Vec<String> = s
        .split('\n')
        .map(|line| {
            let mut parts = line.splitn(3, '$');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(_), Some(inner), Some(_)) => format!("${inner}$"),
                _ => line.to_string(),
            }
        })
        .collect();
    lines.join("\n")
}

/// `re.sub(r"(OPEN)(.*?)(\})", "\\2", s)` (lazy) or `re.sub(r"(OPEN)(.*)(\})", "\\2", s)` (greedy) for a literal
/// opener such as `\text{`: each match runs from an opener to the first (lazy) or last (greedy) `}` on the same
/// line; an opener with no `}` after it on its line is skipped; scanning resumes after each match.
fn unwrap_command(s: &str, open: &str, greedy: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut copied = 0; // s[..copied] has been emitted
    let mut search = 0; // next position a match may start at
    while let Some(rel) = s[search..].find(open) {
        let start = search + rel;
        let body = start + open.len();
        let line = &s[body..s[body..].find('\n').map_or(s.len(), |i| body + i)];
        let close = if greedy { line.rfind('}') } else { line.find('}') };
        match close {
            Some(c) => {
                out.push_str(&s[copied..start]);
                out.push_str(&line[..c]);
                copied = body + c + 1;
                search = copied;
            }
            // The opener starts with an ASCII byte, so start + 1 is a char boundary.
            None => search = start + 1,
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// `re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", s)` (`args == 2`) and `re.sub(r"(sqrt)([^{])", "sqrt{\\2}", s)`
/// (`args == 1`): after the name, the first character may be anything but `{` (a newline included), the second
/// anything but a newline; each is wrapped in braces.
fn expand_shorthand(s: &str, name: &str, args: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(rel) = s[search..].find(name) {
        let start = search + rel;
        let mut rest = s[start + name.len()..].chars();
        let first = rest.next().filter(|&c| c != '{');
        let second = if args == 2 { rest.next().filter(|&c| c != '\n') } else { None };
        match (first, second) {
            (Some(a), None) if args == 1 => {
                out.push_str(&s[copied..start]);
                out.push_str(&format!("{name}{{{a}}}"));
                copied = start + name.len() + a.len_utf8();
            }
            (Some(a), Some(b)) => {
                out.push_str(&s[copied..start]);
                out.push_str(&format!("{name}{{{a}}}{{{b}}}"));
                copied = start + name.len() + a.len_utf8() + b.len_utf8();
            }
            _ => {
                search = start + 1;
                continue;
            }
        }
        search = copied;
    }
    out.push_str(&s[copied..]);
    out
}

/// The capture of the last match of `re.findall(r"(?i)Answer\s*:\s*([^\n]+)", s)`. Matches are found left to
/// right without overlap (the next search starts where a match ends), so text after an "Answer:" on the same line
/// belongs to that match, "Answer:" included.
fn last_answer_capture(s: &str) -> Option<&str> {
    let mut last = None;
    let mut search = 0;
    while search < s.len() {
        let next = s[search..].chars().next().map_or(s.len(), |c| search + c.len_utf8());
        match answer_match_at(s, search) {
            Some((cap_start, cap_end)) => {
                last = Some(&s[cap_start..cap_end]);
                search = cap_end;
            }
            None => search = next,
        }
    }
    last
}

/// Match `(?i)Answer\s*:\s*([^\n]+)` anchored at byte `p`; returns the capture's byte range.
fn answer_match_at(s: &str, p: usize) -> Option<(usize, usize)> {
    let mut chars = s[p..].char_indices().map(|(i, c)| (p + i, c)).peekable();
    for want in "answer".chars() {
        // Python's IGNORECASE matches ASCII letters either case, and also 'ſ' (U+017F) for 's'.
        let (_, c) = chars.next()?;
        if c.to_ascii_lowercase() != want && !(want == 's' && c == '\u{17F}') {
            return None;
        }
    }
    // `\s*` then ':' (giving back whitespace cannot produce a ':').
    while chars.next_if(|&(_, c)| py_isspace(c)).is_some() {}
    chars.next_if(|&(_, c)| c == ':')?;
    // Greedy `\s*` followed by `[^\n]+`: the longest whitespace run after which a non-newline character follows.
    let ws_start = chars.peek().map_or(s.len(), |&(i, _)| i);
    while chars.next_if(|&(_, c)| py_isspace(c)).is_some() {}
    let ws_end = chars.peek().map_or(s.len(), |&(i, _)| i);
    let cap_start = if ws_end < s.len() {
        ws_end // a non-whitespace character follows the run
    } else {
        // Whitespace to the end: back off to the last non-newline whitespace character, if any.
        ws_start + s[ws_start..].char_indices().rev().find(|&(_, c)| c != '\n')?.0
    };
    let cap_end = s[cap_start..].find('\n').map_or(s.len(), |i| cap_start + i);
    Some((cap_start, cap_end))
}

/// Python `str.isspace` / `re` `\s`: Unicode White_Space plus the separators U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// Python `str.strip()` with no arguments.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python `str.isdigit()`: non-empty and every character has Numeric_Type Digit or Decimal.
fn py_str_isdigit(s: &str) -> bool {
    !s.is_empty() && s.chars().all(py_isdigit)
}

/// Python `str.isdigit` for one character (Unicode 14, as in Python 3.11).
fn py_isdigit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let c = c as u32;
    NON_ASCII_DIGITS
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Inclusive ranges of the non-ASCII characters for which Python 3.11's `str.isdigit` is true (decimal digits of
/// all scripts plus superscripts, subscripts, circled and parenthesised digits, ...).
#[rustfmt::skip]
const NON_ASCII_DIGITS: [(u32, u32); 80] = [
    (0xB2, 0xB3), (0xB9, 0xB9), (0x660, 0x669), (0x6F0, 0x6F9), (0x7C0, 0x7C9), (0x966, 0x96F), (0x9E6, 0x9EF),
    (0xA66, 0xA6F), (0xAE6, 0xAEF), (0xB66, 0xB6F), (0xBE6, 0xBEF), (0xC66, 0xC6F), (0xCE6, 0xCEF), (0xD66, 0xD6F),
    (0xDE6, 0xDEF), (0xE50, 0xE59), (0xED0, 0xED9), (0xF20, 0xF29), (0x1040, 0x1049), (0x1090, 0x1099),
    (0x1369, 0x1371), (0x17E0, 0x17E9), (0x1810, 0x1819), (0x1946, 0x194F), (0x19D0, 0x19DA), (0x1A80, 0x1A89),
    (0x1A90, 0x1A99), (0x1B50, 0x1B59), (0x1BB0, 0x1BB9), (0x1C40, 0x1C49), (0x1C50, 0x1C59), (0x2070, 0x2070),
    (0x2074, 0x2079), (0x2080, 0x2089), (0x2460, 0x2468), (0x2474, 0x247C), (0x2488, 0x2490), (0x24EA, 0x24EA),
    (0x24F5, 0x24FD), (0x24FF, 0x24FF), (0x2776, 0x277E), (0x2780, 0x2788), (0x278A, 0x2792), (0xA620, 0xA629),
    (0xA8D0, 0xA8D9), (0xA900, 0xA909), (0xA9D0, 0xA9D9), (0xA9F0, 0xA9F9), (0xAA50, 0xAA59), (0xABF0, 0xABF9),
    (0xFF10, 0xFF19), (0x104A0, 0x104A9), (0x10A40, 0x10A43), (0x10D30, 0x10D39), (0x10E60, 0x10E68),
    (0x11052, 0x1105A), (0x11066, 0x1106F), (0x110F0, 0x110F9), (0x11136, 0x1113F), (0x111D0, 0x111D9),
    (0x112F0, 0x112F9), (0x11450, 0x11459), (0x114D0, 0x114D9), (0x11650, 0x11659), (0x116C0, 0x116C9),
    (0x11730, 0x11739), (0x118E0, 0x118E9), (0x11950, 0x11959), (0x11C50, 0x11C59), (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9), (0x16A60, 0x16A69), (0x16AC0, 0x16AC9), (0x16B50, 0x16B59), (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149), (0x1E2F0, 0x1E2F9), (0x1E950, 0x1E959), (0x1F100, 0x1F10A), (0x1FBF0, 0x1FBF9),
];
