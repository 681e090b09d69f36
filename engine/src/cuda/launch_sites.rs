//! Every `launch!` in the engine's sources against the PTX it launches, without a GPU: the argument list
//! must have as many entries as the kernel has parameters, and each argument whose type can be read off
//! its binding (`x.ptr()`, `n as i64`, `i32_of(..)?`, `|pass: i32|`, ...) the parameter's size. (On a
//! GPU, `launch!` compares every argument's size before each launch: `Kernel::check_args`.) The kernel
//! name is read from the site, from the nearest `let` of the variable it names, or from the body of the
//! method it calls (`scatter.scatter_kernel()`):
//! every string literal there that names a kernel of the family counts, a `{..}` hole standing for one
//! word of lowercase letters and digits (a dtype suffix, a head dimension, an op's name). A pattern that
//! starts with a hole is too loose to trust and, like a name passed in, counts as unresolved; the test
//! requires most sites to be resolved.
use std::path::Path;

/// One `launch!(dev, "family", name, cfg, [args])` call: family, name expression, the arguments' byte sizes
/// (None where the type is not readable here), place.
struct Site {
    family: String,
    name: String,
    args: Vec<Option<usize>>,
    place: String,
}

/// `s[open]` is an opening bracket: the index of its partner, skipping string literals.
fn closing(s: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < s.len() {
        match s[i] {
            b'"' => i = closing_quote(s, i),
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The top-level comma-separated parts of `s` (empty parts, e.g. after a trailing comma, dropped).
fn split_top(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let (mut parts, mut start, mut i) = (Vec::new(), 0, 0);
    while i < b.len() {
        match b[i] {
            b'"' | b'(' | b'[' | b'{' => i = group_end(b, i).unwrap_or(b.len()),
            b',' => {
                parts.push(s[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(s[start..].trim().to_string());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The end of the group that starts at `b[i]`: a string's closing quote, a bracket's partner; else `i`.
fn group_end(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        b'"' => Some(closing_quote(b, i)),
        b'(' | b'[' | b'{' => closing(b, i),
        _ => Some(i),
    }
}

/// `b[open]` is a `"`: the index of the quote that closes the string.
fn closing_quote(b: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < b.len() && b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i
}

fn sites_in(file: &Path, out: &mut Vec<Site>) {
    let text = std::fs::read_to_string(file).expect("readable source");
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("launch!(").map(|i| i + from) {
        from = at + 1;
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        if text[line_start..at].trim_start().starts_with("//") {
            continue;
        }
        let open = at + "launch!".len();
        let close = closing(bytes, open).expect("balanced launch!");
        let parts = split_top(&text[open + 1..close]);
        assert_eq!(parts.len(), 5, "{}: launch! takes (dev, family, name, cfg, [args])", file.display());
        let args = parts[4].strip_prefix('[').and_then(|a| a.strip_suffix(']')).expect("argument list in []");
        let name = resolve(&text, at, &parts[2]);
        let fn_start = text[..at].rfind("fn ").unwrap_or(0);
        out.push(Site {
            family: parts[1].trim_matches('"').to_string(),
            name,
            args: split_top(args).iter().map(|a| arg_size(&text[fn_start..at], a)).collect(),
            place: format!(
                "{}:{}",
                file.file_name().map_or(file.display(), |f| Path::new(f).display()),
                text[..at].lines().count() + 1
            ),
        });
    }
}

/// The expression of the last `let ident = ...;` (or `let ident: T = ...;`) in `before`.
fn binding(before: &str, ident: &str) -> Option<String> {
    let at =
        [format!("let {ident} ="), format!("let {ident}:")].iter().filter_map(|p| before.rfind(p.as_str())).max()?;
    let eq = at + before[at..].find('=')?;
    Some(statement_rhs(before.as_bytes(), eq + 1)?.trim().to_string())
}

/// Byte size of a Rust scalar type's name.
fn type_size(t: &str) -> Option<usize> {
    match t.trim() {
        "i32" | "u32" | "f32" => Some(4),
        "i64" | "u64" | "f64" | "usize" => Some(8),
        _ => None,
    }
}

/// The parameter structs the kernels take by value, by name: `Name { .. }` has the struct's size.
const PARAM_STRUCTS: &[(&str, usize)] = &[
    ("AttnFwdParams", std::mem::size_of::<super::attention::AttnFwdParams>()),
    ("AttnHmixParams", std::mem::size_of::<super::attention::AttnHmixParams>()),
    ("SelectParams", std::mem::size_of::<super::select_params::SelectParams>()),
    ("SelectWideParams", std::mem::size_of::<super::select_params::SelectWideParams>()),
    ("SortScatterParams", std::mem::size_of::<super::select_params::SortScatterParams>()),
];

/// Byte size of the value of `expr` when its shape tells: a device pointer, a cast, a checked i32
/// conversion, a suffixed literal, a parameter struct's literal.
fn expr_size(expr: &str) -> Option<usize> {
    let e = expr.trim().trim_end_matches('?');
    if let Some((name, _)) = e.split_once('{') {
        if let Some(&(_, size)) = PARAM_STRUCTS.iter().find(|(n, _)| *n == name.trim()) {
            return Some(size);
        }
    }
    if e.ends_with(".ptr()") || e.ends_with("error_flag_ptr()") || e.contains("map_or(0u64") {
        return Some(8);
    }
    let callee = e.split('(').next().and_then(|c| c.rsplit("::").next()).unwrap_or("");
    if e.contains('(') && ["i32_of", "i32_arg", "to_i32"].contains(&callee) {
        return Some(4);
    }
    if let Some((_, t)) = e.rsplit_once(" as ") {
        return type_size(t);
    }
    let suffix = e.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '_');
    if suffix.len() < e.len() {
        return type_size(suffix);
    }
    None
}

/// The text from `from` to the `;` that ends the statement (brackets and strings skipped).
fn statement_rhs(b: &[u8], from: usize) -> Option<String> {
    let mut i = from;
    while i < b.len() && b[i] != b';' {
        i = group_end(b, i)? + 1;
    }
    Some(String::from_utf8_lossy(&b[from..i.min(b.len())]).into_owned())
}

/// Byte size of argument `arg` at the end of `body` (its function up to the launch), from the last binding
/// of it there: `let arg = e`, a position in `let (.., arg, ..) = (.., e, ..)`, a typed parameter or `let`
/// (`arg: T`), or `for arg in a..bT`; an argument that is an expression, from its shape. None when it
/// cannot tell.
fn arg_size(body: &str, arg: &str) -> Option<usize> {
    arg_size_within(body, arg, 3)
}

/// [`arg_size`], following a binding to another variable (`let (a, s) = (x.ptr(), seed)`) at most `depth`
/// times.
fn arg_size_within(body: &str, arg: &str, depth: usize) -> Option<usize> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let arg = arg.trim();
    if !arg.chars().all(is_ident) || arg.is_empty() {
        return expr_size(arg);
    }
    if depth == 0 {
        return None;
    }
    // The size of a bound expression: itself, or the variable it names, bound earlier in `body`.
    let value = |e: &str, at: usize| {
        let e = e.trim();
        if !e.is_empty() && e.chars().all(is_ident) && e != arg {
            arg_size_within(&body[..at], e, depth - 1)
        } else {
            expr_size(e)
        }
    };
    let b = body.as_bytes();
    // Whole-word occurrences of `arg`, last first: the first that binds it decides.
    let mut end = body.len();
    while let Some(at) = body[..end].rfind(arg) {
        end = at;
        let rest = &body[at + arg.len()..];
        if body[..at].ends_with(is_ident) || rest.starts_with(is_ident) {
            continue;
        }
        let before = body[..at].trim_end();
        let after = rest.trim_start();
        if let Some(t) = after.strip_prefix(':').filter(|t| !t.starts_with(':')) {
            let t: String = t.trim_start().chars().take_while(|&c| is_ident(c)).collect();
            return type_size(&t);
        }
        if (before.ends_with("let") || before.ends_with("let mut")) && after.starts_with('=') {
            return value(&statement_rhs(b, at + arg.len() + rest.find('=')? + 1)?, at);
        }
        if before.ends_with("for") && after.starts_with("in ") {
            return expr_size(after[3..].split_once("..")?.1.split([' ', '{']).next()?);
        }
        if let Some(open) = before.rfind("let (").filter(|&o| !body[o + 5..at].contains(')')) {
            let names = &body[open + 5..];
            let close = names.find(')')?;
            let index = split_top(&names[..close]).iter().position(|n| n == arg)?;
            let rhs = statement_rhs(b, open + 5 + close + names[close..].find('=')? + 1)?;
            let inner = rhs.trim().strip_prefix('(')?.strip_suffix(')')?;
            return value(split_top(inner).get(index)?, open);
        }
    }
    None
}

/// What a site's name expression stands for: a variable's `let` expression, a method call's body (each
/// followed once more), else the expression itself.
fn resolve(text: &str, at: usize, expr: &str) -> String {
    let mut e = expr.to_string();
    for _ in 0..2 {
        let next = if e.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            binding(&text[..at], &e)
        } else if let Some(method) = e.strip_suffix("()").and_then(|x| x.rsplit('.').next()) {
            method_body(text, method)
        } else {
            None
        };
        match next {
            Some(n) => e = n,
            None => break,
        }
    }
    e
}

/// The body of `fn method(` in `text` (a name-returning method such as `SortScatter::scatter_kernel`).
fn method_body(text: &str, method: &str) -> Option<String> {
    let at = text.find(&format!("fn {method}("))?;
    let open = at + text[at..].find('{')?;
    Some(text[open..=closing(text.as_bytes(), open)?].to_string())
}

/// Every string in `expr` (`"..."` literals, `{..}` holes as in the header) that names a kernel of the PTX.
/// None when there is none.
fn matching_kernels(ptx: &str, expr: &str) -> Option<Vec<String>> {
    let entries: Vec<&str> = ptx.split(".entry ").skip(1).filter_map(|e| e.split('(').next()).collect();
    let mut found = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let end = closing_quote(b, i);
        let lit = &expr[i + 1..end.min(expr.len())];
        i = end + 1;
        if lit.starts_with('{') {
            continue;
        }
        for k in &entries {
            if fits(lit, k) && !found.iter().any(|f| f == k) {
                found.push(k.to_string());
            }
        }
    }
    (!found.is_empty()).then_some(found)
}

/// Whether kernel name `k` fits the pattern `lit`: each `{..}` hole one or more lowercase letters or digits,
/// or digits only right after a letter (`attn_fwd_d{}` is a head dimension, not `attn_fwd_dot`).
fn fits(lit: &str, k: &str) -> bool {
    let Some(open) = lit.find('{') else { return lit == k };
    let Some(close) = lit[open..].find('}').map(|c| c + open) else { return false };
    let Some(tail) = k.strip_prefix(&lit[..open]) else { return false };
    let digits_only = lit[..open].ends_with(|c: char| c.is_ascii_alphabetic());
    let word = tail.bytes().take_while(|c| c.is_ascii_digit() || (!digits_only && c.is_ascii_lowercase())).count();
    // The hole takes 1..=word characters; the rest must fit the rest of the pattern.
    (1..=word).any(|w| fits(&lit[close + 1..], &tail[w..]))
}

#[test]
fn every_launch_passes_as_many_arguments_as_its_kernel_takes() {
    if !entrl_kernels::COMPILED {
        eprintln!("skipped: this build has no PTX (nvcc was not found); CI builds it");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda");
    let mut sites = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("engine/src/cuda") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("launch_sites.rs") {
            sites_in(&path, &mut sites);
        }
    }
    let (mut checked, mut unresolved, mut wrong) = (0, Vec::new(), Vec::new());
    let (mut sized, mut unsized_args) = (0, Vec::new());
    for s in &sites {
        let ptx = entrl_kernels::ptx(&s.family).unwrap_or_else(|| panic!("{}: no PTX family {}", s.place, s.family));
        let Some(kernels) = matching_kernels(ptx, &s.name) else {
            unresolved.push(format!("{} ({})", s.place, s.name));
            continue;
        };
        assert!(!kernels.is_empty(), "{}: no kernel of {} fits {}", s.place, s.family, s.name);
        for k in kernels {
            let params = entrl_kernels::param_sizes(&s.family, &k).expect("parsable entry");
            checked += 1;
            if params.len() != s.args.len() {
                wrong.push(format!(
                    "{}: {k} takes {} parameters, the launch passes {}",
                    s.place,
                    params.len(),
                    s.args.len()
                ));
                continue;
            }
            for (i, (&want, got)) in params.iter().zip(&s.args).enumerate() {
                match got {
                    Some(got) if *got != want => {
                        wrong.push(format!("{}: {k} parameter {i} is {want} bytes, the argument {got}", s.place))
                    }
                    Some(_) => sized += 1,
                    None => unsized_args.push(format!("{} #{i}", s.place)),
                }
            }
        }
    }
    assert!(wrong.is_empty(), "launch sites that do not match their kernels:\n{}", wrong.join("\n"));
    // Nearly every site names its kernel by a literal or a format!; a name in a variable is left to the
    // GPU-side check.
    assert!(sites.len() >= 50, "found only {} launch! sites: the parser lost some", sites.len());
    assert!(unresolved.len() * 10 <= sites.len(), "unresolved kernel names: {unresolved:?}");
    assert!(checked >= sites.len() - unresolved.len());
    // Most argument types are readable from their bindings (the rest are left to the GPU-side check).
    assert!(unsized_args.len() * 5 <= sized, "{sized} argument sizes checked, not read: {unsized_args:?}");
    eprintln!(
        "{} launch sites, {checked} (site, kernel) pairs and {sized} argument sizes checked; unresolved names: \
         {unresolved:?}; argument sizes not read: {unsized_args:?}",
        sites.len()
    );
}

#[test]
fn the_parser_reads_literal_formatted_and_bound_names() {
    let ptx = ".visible .entry fill_f32(\n.param .u64 a\n)\n.visible .entry fill_bf16(\n.param .u64 a\n)\n\
               .visible .entry fill_f32_strided(\n.param .u64 a\n)\n.visible .entry add_f32(\n)";
    assert_eq!(matching_kernels(ptx, "\"fill_f32\"").unwrap(), ["fill_f32"]);
    let mut any = matching_kernels(ptx, "format!(\"fill_{}\", float_only(\"fill\", dtype)?)").unwrap();
    any.sort();
    assert_eq!(any, ["fill_bf16", "fill_f32"]);
    assert_eq!(matching_kernels(ptx, "format!(\"fill_{t}_strided\")").unwrap(), ["fill_f32_strided"]);
    assert_eq!(matching_kernels(ptx, "format!(\"{}_{sfx}\", op.name())"), None, "a leading hole is too loose");
    assert!(fits("attn_d{}", "attn_d128") && !fits("attn_d{}", "attn_d") && !fits("a_{}", "a_b_c"));
    assert!(!fits("attn_bwd_d{}", "attn_bwd_dot") && fits("attn_{}", "attn_dot"));
    assert!(fits("bcast_{}_{sfx}", "bcast_add_bf16") && !fits("bcast_{}_{sfx}", "bcast_add"));
    let src = "impl V { fn kernel(self) -> &'static str { match self { A => \"fill_f32\", B => \"x\" } } }";
    assert_eq!(matching_kernels(ptx, &method_body(src, "kernel").unwrap()).unwrap(), ["fill_f32"]);
    assert!(matching_kernels(ptx, "name").is_none());
    let src = "let name = \"old\";\n let name = if bf { \"fill_bf16\" } else { \"fill_f32\" };\n launch!(";
    assert_eq!(binding(src, "name").unwrap(), "if bf { \"fill_bf16\" } else { \"fill_f32\" }");
    assert_eq!(binding("let k: &str = &format!(\"a_{}\", x);", "k").unwrap(), "&format!(\"a_{}\", x)");
    assert_eq!(split_top("a, f(b, c), [d, e], \"x, y\",").len(), 4);
    let body = "let p = SortScatterParams { keys_out: k, n: nn, shift, pad: 0 };\n let x = 1;\n";
    assert_eq!(arg_size(body, "p"), Some(72));
}
