//! Every `imgpub` command line in a shell block of README.md and docs/*.md parses as the
//! binary parses it (issue #29: docs that match). Placeholders are filled in as a reader
//! would; a line elided with a lone `…` may leave out required flags, nothing else.

use std::path::{Path, PathBuf};

use super::Cli;

/// The shell blocks' `imgpub` lines of one Markdown file, continuations joined.
fn command_lines(text: &str) -> Vec<String> {
    let mut lines = vec![];
    let mut in_shell = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_shell = matches!(line.trim(), "```sh" | "```bash");
            continue;
        }
        if !in_shell {
            continue;
        }
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(&format!("{head} ")),
            None => {
                let whole = format!("{pending}{line}");
                pending.clear();
                if whole.starts_with("imgpub ") {
                    lines.push(whole);
                }
            }
        }
    }
    lines
}

/// The line as a reader fills it in: example ids for elided ones, optional flags given,
/// comments, redirections and pipes left out.
fn filled(line: &str) -> String {
    let mut line = line.to_string();
    for cut in [" #", " >", " |"] {
        if let Some(i) = line.find(cut) {
            line.truncate(i);
        }
    }
    line.replace("ami-0123…", "ami-0123456789abcdef0")
        .replace("ami-0456…", "ami-0456789abcdef0123")
        .replace(
            "arn:aws:organizations::…:organization/o-…",
            "arn:aws:organizations::123456789012:organization/o-abc123defg",
        )
        .replace(['[', ']'], "")
}

/// Words as the shell splits them (single quotes only, as the docs use).
fn words(line: &str) -> Vec<String> {
    let mut out = vec![];
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    files.extend(more);
    files
}

#[test]
fn every_command_in_the_docs_parses() {
    let mut checked = 0;
    let mut wrong = vec![];
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in command_lines(&text) {
            let args = words(&filled(&line));
            let elided = args.iter().any(|w| w == "…");
            let args: Vec<&String> = args.iter().filter(|w| *w != "…").collect();
            checked += 1;
            match Cli::try_parse_ore(args) {
                Ok(_) => {}
                Err(e) if elided && e.kind() == clap::error::ErrorKind::MissingRequiredArgument => {
                }
                Err(e) => wrong.push(format!(
                    "{}: {line}\n  {}",
                    file.display(),
                    e.to_string().lines().next().unwrap_or_default()
                )),
            }
        }
    }
    assert!(checked >= 15, "only {checked} command lines found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_wrong_flag_in_a_doc_line_is_found() {
    // The check can fail: a misspelt flag, as a doc might hold it.
    let line = filled("imgpub aws upload --region us-east-1 --fille os.raw");
    assert!(Cli::try_parse_ore(words(&line)).is_err());
    assert_eq!(
        command_lines("```sh\nimgpub aws gc \\\n    --duration 1h30m\n```\n"),
        ["imgpub aws gc  --duration 1h30m"]
    );
}
