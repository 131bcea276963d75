//! What guards the HTML renderer against hostile pages.
//!
//! html5ever's tree builder (which html2text, like every html5ever-based converter, parses with)
//! takes time quadratic in the nesting depth: each start tag walks the stack of open elements.
//! Measured here (debug build): 1,000 nested `<div>`s parse in 0.15 s, 8,000 in 6.6 s, and the
//! 2 MiB a fetch may read hold 400,000 of them. So before a page is parsed, one linear pass of
//! html5ever's tokenizer measures its depth; a page deeper than [`MAX_DEPTH`] is rendered from
//! the tokens alone ([`flat_text`]: text with line breaks at block elements, scripts and styles
//! dropped), which is linear.

use std::cell::{Cell, RefCell};

use html5ever::TokenizerResult;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};

/// The deepest nesting rendered with the full renderer. Real pages stay well under 100 levels.
pub(crate) const MAX_DEPTH: usize = 512;

/// Elements that never hold children.
const VOID: &[&str] =
    &["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"];

/// Elements whose end tag may be left out (the tree builder closes them itself, so they do not
/// deepen the tree) and the document's own wrappers.
const OPTIONAL_END: &[&str] = &[
    "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead", "tbody", "tfoot", "rb", "rt", "rp",
    "colgroup", "caption", "html", "head", "body",
];

/// Elements whose content is not text for a reader.
const HIDDEN: &[&str] = &["script", "style", "noscript", "template", "svg", "head", "title"];

/// Elements that start a new line in the flat text.
const BLOCK: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
];

/// The tokenizer's state for a tag: script content as script data, style and friends as raw
/// text, title and textarea as RCDATA (as the tree builder would switch it).
fn raw_kind(name: &str) -> Option<RawKind> {
    match name {
        "script" => Some(RawKind::ScriptData),
        "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => Some(RawKind::Rawtext),
        "title" | "textarea" => Some(RawKind::Rcdata),
        _ => None,
    }
}

/// A token sink measuring depth and, when asked, collecting text.
#[derive(Default)]
struct Sink {
    depth: Cell<usize>,
    max_depth: Cell<usize>,
    collect: bool,
    hidden: Cell<usize>,
    text: RefCell<String>,
}

impl Sink {
    fn newline(&self) {
        let mut text = self.text.borrow_mut();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
    }
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                let counts = !VOID.contains(&name) && !OPTIONAL_END.contains(&name) && !tag.self_closing;
                let hidden = HIDDEN.contains(&name);
                match tag.kind {
                    TagKind::StartTag => {
                        if counts {
                            self.depth.set(self.depth.get() + 1);
                            self.max_depth.set(self.max_depth.get().max(self.depth.get()));
                        }
                        if self.collect {
                            if hidden && !tag.self_closing {
                                self.hidden.set(self.hidden.get() + 1);
                            }
                            if BLOCK.contains(&name) {
                                self.newline();
                            }
                        }
                        if let Some(kind) = raw_kind(name) {
                            return TokenSinkResult::RawData(kind);
                        }
                    }
                    TagKind::EndTag => {
                        if counts {
                            self.depth.set(self.depth.get().saturating_sub(1));
                        }
                        if self.collect {
                            if hidden {
                                self.hidden.set(self.hidden.get().saturating_sub(1));
                            }
                            if BLOCK.contains(&name) {
                                self.newline();
                            }
                        }
                    }
                }
            }
            Token::CharacterTokens(chars) if self.collect && self.hidden.get() == 0 => {
                let mut text = self.text.borrow_mut();
                // Runs of white space become one space, as a browser shows them.
                for word in chars.split_whitespace() {
                    if !text.is_empty() && !text.ends_with('\n') && !text.ends_with(' ') {
                        text.push(' ');
                    }
                    text.push_str(word);
                }
                if chars.ends_with(char::is_whitespace) && !text.is_empty() && !text.ends_with('\n') {
                    text.push(' ');
                }
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

fn tokenize(html: &str, collect: bool) -> Sink {
    let tokenizer = Tokenizer::new(Sink { collect, ..Sink::default() }, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never asks to stop for a script, so one feed reads everything.
    while let TokenizerResult::Script(()) = tokenizer.feed(&input) {}
    tokenizer.end();
    tokenizer.sink
}

/// How deeply the page's elements nest, counting elements that must be closed explicitly (an
/// upper bound of the tree's depth for well-formed pages; unclosed `<p>`s and `<li>`s do not
/// count). Linear in the page's size.
pub(crate) fn nesting_depth(html: &str) -> usize {
    tokenize(html, false).max_depth.get()
}

/// The page's text, from the tokenizer alone: line breaks at block elements, white space runs as
/// one space, scripts, styles and the head dropped. Linear in the page's size.
pub(crate) fn flat_text(html: &str) -> String {
    let text = tokenize(html, true).text.into_inner();
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_explicitly_closed_elements() {
        assert_eq!(nesting_depth("<div><div><span>x</span></div></div>"), 3);
        assert_eq!(nesting_depth("<ul><li>a<li>b<li>c</ul>"), 1);
        assert_eq!(nesting_depth(&"<p>para".repeat(5000)), 0);
        assert_eq!(nesting_depth(&"<br><img src=x>".repeat(5000)), 0);
        assert_eq!(nesting_depth(&format!("{}x", "<div>".repeat(10_000))), 10_000);
        // A script's content is not markup.
        assert_eq!(nesting_depth(&format!("<script>{}</script>", "<div>".repeat(10_000))), 1);
    }

    #[test]
    fn flat_text_keeps_the_words_and_drops_scripts() {
        let html = "<html><head><title>T</title><style>p{}</style></head><body><h1>Head</h1>\
                    <script>var x = '<p>no</p>';</script><p>one   two</p><div>three<br>four</div></body></html>";
        assert_eq!(flat_text(html), "Head\none two\nthree\nfour");
    }

    #[test]
    fn a_deep_page_renders_in_linear_time() {
        // Time grows with depth, not with its square: 4x the depth takes well under 16x the time
        // (linear is 4x, quadratic 16x). The fastest of two tries of each, so a load spike on a shared machine
        // does not decide the result; a wall-clock bound alone failed under load in debug builds.
        let render = |depth: usize| {
            let page =
                format!("<html><body>{}deep text{}</body></html>", "<div>".repeat(depth), "</div>".repeat(depth));
            (0..2)
                .map(|_| {
                    let started = std::time::Instant::now();
                    assert_eq!(super::super::html_to_text(&page), "deep text");
                    started.elapsed()
                })
                .min()
                .unwrap_or_default()
        };
        let small = render(25_000);
        let large = render(100_000);
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
        eprintln!("deep page: {small:?} -> {large:?} ({ratio:.1}x)");
        assert!(ratio < 12.0, "4x the depth took {ratio:.1}x the time ({small:?} -> {large:?})");
    }
}
