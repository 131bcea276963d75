//! Doc comments: reading `#[doc = "..."]` attributes and turning them into a tool description.

use syn::{Attribute, Expr, ExprLit, Lit, Meta};

/// Whether the attribute is a doc comment (`/// ...`, `/** ... */` or `#[doc = ...]`).
pub(crate) fn is_doc(attr: &Attribute) -> bool {
    attr.path().is_ident("doc")
}

/// The text lines of the literal doc comments among `attrs`, in order. Doc attributes whose value
/// is not a string literal (`#[doc = include_str!(..)]`) are skipped.
pub(crate) fn doc_lines(attrs: &[Attribute]) -> Vec<String> {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| is_doc(a)) {
        if let Meta::NameValue(nv) = &attr.meta
            && let Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) = &nv.value
        {
            // `split`, not `lines`: an empty `///` line is a paragraph break and must stay.
            lines.extend(s.value().split('\n').map(|line| line.trim_end_matches('\r').to_string()));
        }
    }
    lines
}

/// Turns doc comment lines into one description: lines are trimmed; the lines of a paragraph are
/// joined with spaces; paragraphs are separated by a blank line; list items, headings, quotes,
/// table rows and fenced code blocks keep their own lines. `None` when there is no text.
pub(crate) fn description(lines: &[String]) -> Option<String> {
    let mut out = String::new();
    let mut paragraph_break = false;
    let mut in_fence = false;
    let mut keep_line = false; // the previous line must not be joined with the next one
    for raw in lines {
        let line = raw.trim();
        let fence = line.starts_with("```") || line.starts_with("~~~");
        if in_fence || fence {
            // Inside a code block: keep the line as written, minus the one space after `///`.
            let verbatim = if in_fence && !fence { raw.strip_prefix(' ').unwrap_or(raw).trim_end() } else { line };
            push(&mut out, verbatim, if paragraph_break { "\n\n" } else { "\n" });
            paragraph_break = false;
            keep_line = true;
            if fence {
                in_fence = !in_fence;
            }
            continue;
        }
        if line.is_empty() {
            paragraph_break = !out.is_empty();
            continue;
        }
        let separator = if paragraph_break {
            "\n\n"
        } else if keep_line || starts_block(line) {
            "\n"
        } else {
            " "
        };
        push(&mut out, line, separator);
        paragraph_break = false;
        keep_line = (starts_block(line) && !is_list_item(line)) || ends_with_hard_break(raw);
    }
    let out = out.trim().to_string();
    if out.is_empty() { None } else { Some(out) }
}

fn push(out: &mut String, line: &str, separator: &str) {
    if !out.is_empty() {
        out.push_str(separator);
    }
    out.push_str(line);
}

/// Lines that start a Markdown block of their own.
fn starts_block(line: &str) -> bool {
    is_list_item(line) || line.starts_with('#') || line.starts_with('>') || line.starts_with('|')
}

fn is_list_item(line: &str) -> bool {
    if line.starts_with("- ") || line.starts_with("* ") || line.starts_with("+ ") {
        return true;
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && (line[digits..].starts_with(". ") || line[digits..].starts_with(") "))
}

/// A Markdown hard line break: two trailing spaces or a trailing backslash.
fn ends_with_hard_break(raw: &str) -> bool {
    raw.ends_with("  ") || raw.trim_end().ends_with('\\')
}

#[cfg(test)]
mod tests {
    use super::description;

    fn desc(lines: &[&str]) -> Option<String> {
        description(&lines.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn joins_paragraph_lines_with_spaces() {
        assert_eq!(desc(&[" Get the weather", " for a city."]).as_deref(), Some("Get the weather for a city."));
    }

    #[test]
    fn separates_paragraphs() {
        assert_eq!(desc(&[" One.", "", "", " Two", " lines."]).as_deref(), Some("One.\n\nTwo lines."));
    }

    #[test]
    fn keeps_list_items_on_their_own_lines() {
        assert_eq!(
            desc(&[" Modes:", " - fast", "   and cheap", " - slow", " 1. first"]).as_deref(),
            Some("Modes:\n- fast and cheap\n- slow\n1. first")
        );
    }

    #[test]
    fn keeps_code_blocks_verbatim() {
        assert_eq!(
            desc(&[" Example:", " ```", " let x = 1;", "     indented", " ```", " After."]).as_deref(),
            Some("Example:\n```\nlet x = 1;\n    indented\n```\nAfter.")
        );
    }

    #[test]
    fn empty_docs_give_none() {
        assert_eq!(desc(&[]), None);
        assert_eq!(desc(&["", "   "]), None);
    }
}
