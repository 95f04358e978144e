//! The shape of the source tree (docs/architecture.md, issue #29): no
//! import cycle between files, no file over 1,000 code lines, no function
//! over 100 lines, a thin `main.rs`. A tokenizer of our own reads `src/`:
//! comments, strings and character literals are skipped, so a brace or a
//! path inside them counts for nothing.

#![allow(clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Most code lines in one file (unit tests, comments and blank lines
/// aside).
const MAX_FILE_LINES: usize = 1000;
/// Most lines in one function, from `fn` to its closing brace.
const MAX_FN_LINES: usize = 100;
/// Most lines in `main.rs`.
const MAX_MAIN_LINES: usize = 200;

/// One source file: its module path and its text with comments, string
/// and character literals blanked out (line breaks kept), up to its
/// `#[cfg(test)]` module.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    code: String,
}

/// Blank out comments, strings and char literals, keeping line breaks.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r'
            && matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push(b'"');
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"'
                    && b[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == b'#')
                        .count()
                        == hashes
                {
                    j += 1 + hashes;
                    break;
                }
                blank(&mut out, b[j]);
                j += 1;
            }
            out.push(b'"');
            i = j;
        } else if c == b'"' {
            out.push(b'"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b'"');
            i += 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.extend(std::iter::repeat_n(b' ', e - i + 1));
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).expect("ASCII blanks keep UTF-8")
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let code = strip(&fs::read_to_string(&p).unwrap());
            let code = match code.find("#[cfg(test)]") {
                Some(i) => code[..i].to_string(),
                None => code,
            };
            Source {
                path: p,
                module,
                code,
            }
        })
        .collect()
}

/// The files each file names through `crate::` or `super::` paths.
fn edges(files: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut out = BTreeMap::new();
    for f in files {
        let mut deps = BTreeSet::new();
        let is_mod_rs = f.path.file_name().is_some_and(|n| n == "mod.rs");
        for (start, word) in [("crate::", 0usize), ("super::", 1)] {
            for (at, _) in f.code.match_indices(start) {
                let before = f.code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let rest = &f.code[at + start.len()..];
                let segs: Vec<String> = rest
                    .split("::")
                    .map(|s| {
                        s.chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect::<String>()
                    })
                    .take_while(|s| !s.is_empty())
                    .collect();
                let mut path = if word == 1 {
                    let mut base = f.module.clone();
                    // `super` of a file module is its parent; of `x/mod.rs`,
                    // the parent of `x`.
                    base.pop();
                    let _ = is_mod_rs;
                    base
                } else {
                    Vec::new()
                };
                path.extend(segs);
                for k in (1..=path.len()).rev() {
                    let cand = path[..k].to_vec();
                    if modules.contains(&cand) && cand != f.module {
                        deps.insert(cand.join("::"));
                        break;
                    }
                }
            }
        }
        out.insert(f.module.join("::"), deps);
    }
    out
}

/// The strongly connected components of more than one file.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two files are in one cycle when each reaches the other.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(v) = stack.pop() {
            for w in g.get(&v).into_iter().flatten() {
                if seen.insert(w.clone()) {
                    stack.push(w.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for a in g.keys() {
        if done.contains(a) {
            continue;
        }
        let comp: Vec<String> = g
            .keys()
            .filter(|b| reaches[a].contains(*b) && reaches[*b].contains(a))
            .cloned()
            .collect();
        done.extend(comp.iter().cloned());
        if comp.len() > 1 {
            out.push(comp);
        }
    }
    out
}

fn code_lines(code: &str) -> usize {
    code.lines().filter(|l| !l.trim().is_empty()).count()
}

/// Every function (name, first line, lines from `fn` to its closing brace).
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(at) = t.find("fn ") else { continue };
        let head = &t[..at];
        let ok_head = head.split_whitespace().all(|w| {
            [
                "pub",
                "pub(crate)",
                "pub(super)",
                "const",
                "unsafe",
                "async",
                "extern",
            ]
            .contains(&w)
        });
        if !ok_head {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        let mut end = None;
        'scan: for (j, l2) in lines.iter().enumerate().skip(i) {
            for c in l2.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break 'scan,
                    _ => {}
                }
                if opened && depth == 0 {
                    end = Some(j);
                    break 'scan;
                }
            }
        }
        if let Some(e) = end {
            out.push((name, i + 1, e - i + 1));
        }
    }
    out
}

#[test]
fn no_import_cycle_between_files() {
    let files = sources();
    let g = edges(&files);
    // The graph is read: the stages depend on the leaves.
    assert!(g["run::single"].contains("sink"), "{:?}", g["run::single"]);
    assert!(g["sink"].contains("view::open"));
    let c = cycles(&g);
    assert!(c.is_empty(), "import cycles: {c:?}");
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}

#[test]
fn no_file_over_the_limit() {
    let files = sources();
    let largest = files.iter().max_by_key(|f| code_lines(&f.code)).unwrap();
    eprintln!(
        "{} files; the largest, {} code lines: {}",
        files.len(),
        code_lines(&largest.code),
        largest.path.display()
    );
    let over: Vec<String> = files
        .iter()
        .filter(|f| code_lines(&f.code) > MAX_FILE_LINES)
        .map(|f| format!("{} ({} lines)", f.path.display(), code_lines(&f.code)))
        .collect();
    assert!(
        over.is_empty(),
        "files over {MAX_FILE_LINES} code lines: {over:?}"
    );
}

#[test]
fn no_function_over_the_limit() {
    let files = sources();
    let mut seen = 0;
    let mut over = Vec::new();
    let mut longest = (0, String::new());
    for f in &files {
        for (name, line, len) in functions(&f.code) {
            seen += 1;
            if len > longest.0 {
                longest = (len, format!("{}:{line} {name}", f.path.display()));
            }
            if len > MAX_FN_LINES {
                over.push(format!("{}:{line} {name} ({len} lines)", f.path.display()));
            }
        }
    }
    assert!(
        seen > 500,
        "only {seen} functions found: the scanner is broken"
    );
    eprintln!(
        "{seen} functions; the longest, {} lines: {}",
        longest.0, longest.1
    );
    assert!(
        over.is_empty(),
        "functions over {MAX_FN_LINES} lines: {over:#?}"
    );
}

#[test]
fn the_scanner_skips_strings_comments_and_chars() {
    let code = strip("fn a() {\n    let s = \"}}\"; // }\n    let c = '{'; let r = r#\"{\"#;\n    /* } */ x::<'a>();\n}\nfn b() {}\n");
    let f = functions(&code);
    assert_eq!(f, vec![("a".into(), 1, 5), ("b".into(), 6, 1)]);
}

#[test]
fn main_is_orchestration_only() {
    let main =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    let n = main.lines().count();
    assert!(n < MAX_MAIN_LINES, "src/main.rs has {n} lines");
}
