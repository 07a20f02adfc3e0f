// SPDX-License-Identifier: MIT OR Apache-2.0

//! The README's code is the examples' code. Every ```rust and ```python block in README.md
//! follows a line `<!-- file: examples/… -->` naming the file it shows, and equals that file less
//! its licence line (the first line, when it is an SPDX line, and the blank line after it).
//! `make test` runs those files (scripts/test.sh), so a snippet a reader copies is one that ran.

use std::fs;
use std::path::{Path, PathBuf};

/// A fenced code block of README.md.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The fence's info string: `rust`, `python`, `toml`, …
    lang: String,
    /// The file named by a `<!-- file: … -->` line just before the fence.
    file: Option<String>,
    /// The lines between the fences, each ending with a newline.
    text: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut previous = "";
    for (index, line) in readme.lines().enumerate() {
        match open.as_mut() {
            None => {
                if let Some(lang) = line.strip_prefix("```") {
                    let file = previous
                        .trim()
                        .strip_prefix("<!-- file:")
                        .and_then(|rest| rest.strip_suffix("-->"))
                        .map(|file| file.trim().to_owned());
                    open = Some(Block {
                        line: index + 1,
                        lang: lang.trim().to_owned(),
                        file,
                        text: String::new(),
                    });
                }
            }
            Some(_) if line.trim_end() == "```" => blocks.extend(open.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
        previous = line;
    }
    assert!(open.is_none(), "README.md: a code block is not closed");
    blocks
}

/// `text` less a first SPDX line and the blank line after it.
fn without_licence(text: &str) -> &str {
    let mut lines = text.splitn(3, '\n');
    match (lines.next(), lines.next(), lines.next()) {
        (Some(first), Some(""), Some(rest)) if first.contains("SPDX-License-Identifier:") => rest,
        _ => text,
    }
}

/// The first line, 1-based, where `a` and `b` differ, and that line in each (`None` past the end).
fn first_difference<'t>(
    a: &'t str,
    b: &'t str,
) -> Option<(usize, Option<&'t str>, Option<&'t str>)> {
    let (mut a_lines, mut b_lines) = (a.lines(), b.lines());
    for number in 1.. {
        match (a_lines.next(), b_lines.next()) {
            (None, None) => break,
            (x, y) if x != y => return Some((number, x, y)),
            _ => (),
        }
    }
    None
}

#[test]
fn code_blocks_equal_their_example_files() {
    let readme = read(&root().join("README.md"));
    let mut problems = Vec::new();
    let mut checked = 0;
    for block in blocks(&readme) {
        if block.lang != "rust" && block.lang != "python" {
            continue;
        }
        let Some(file) = &block.file else {
            problems.push(format!(
                "README.md:{}: a ```{} block without a `<!-- file: … -->` line before it",
                block.line, block.lang
            ));
            continue;
        };
        let content = read(&root().join(file));
        let expected = without_licence(&content);
        if block.text != expected {
            // Line numbers in both files: the block starts after its fence, the file's code after
            // its licence lines.
            let licence_lines = content.lines().count() - expected.lines().count();
            problems.push(match first_difference(&block.text, expected) {
                Some((n, in_readme, in_file)) => format!(
                    "README.md:{} differs from {file}:{}:\n    README: {}\n    file:   {}",
                    block.line + n,
                    licence_lines + n,
                    in_readme.unwrap_or("(end of block)"),
                    in_file.unwrap_or("(end of file)")
                ),
                None => format!(
                    "README.md:{}: the block differs from {file} in line endings",
                    block.line
                ),
            });
        }
        checked += 1;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked > 0, "README.md has no rust or python blocks");
}

#[test]
fn every_readme_example_is_in_the_readme() {
    let readme = read(&root().join("README.md"));
    let shown: Vec<String> = blocks(&readme).into_iter().filter_map(|b| b.file).collect();
    let dir = root().join("examples");
    let mut examples: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("readme_"))
        .map(|name| format!("examples/{name}"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no examples/readme_* files");
    for example in examples {
        assert!(
            shown.contains(&example),
            "{example} is not shown in README.md"
        );
    }
}

/// The dependency lines the README tells a user to add name the crates the examples use, under
/// the names they use them by, at the version this crate builds with.
#[test]
fn readme_dependency_lines_match_cargo_toml() {
    let readme = read(&root().join("README.md"));
    let cargo_toml = read(&root().join("Cargo.toml"));
    let gst_version = cargo_toml
        .lines()
        .find(|line| line.starts_with("gst = "))
        .and_then(|line| line.split("version = \"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("Cargo.toml: no `gst = { …, version = \"…\" }` line");
    assert!(
        cargo_toml.contains("name = \"gst-plugin-bgaudio\"")
            && cargo_toml.contains("name = \"gstbgaudio\""),
        "Cargo.toml: the package or library name changed; update README.md's dependency lines"
    );

    let toml: String = blocks(&readme)
        .into_iter()
        .filter(|b| b.lang == "toml")
        .map(|b| b.text)
        .collect();
    let gst_line = format!("gst = {{ package = \"gstreamer\", version = \"{gst_version}\" }}");
    assert!(
        toml.lines().any(|line| line.trim() == gst_line),
        "README.md: no ```toml block with `{gst_line}`"
    );
    assert!(
        toml.lines()
            .any(|line| line.trim_start().starts_with("gst-plugin-bgaudio = ")),
        "README.md: no ```toml block with a `gst-plugin-bgaudio = …` line"
    );
}
