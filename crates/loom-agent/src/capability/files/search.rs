//! `glob` and `grep`: walks of the tree under the root that honour `.gitignore` and `.ignore`
//! (with the `ignore` crate) and skip hidden files, matching names with `globset` and lines with
//! ripgrep's own searcher (`grep-regex`, `grep-searcher`).
//!
//! The walks list directories by path, so a directory swapped for a symbolic link that leads out
//! while a walk runs could show up in it; every path a walk yields is therefore checked (`glob`)
//! or opened (`grep`) again through the root's handle, which refuses whatever leads out. What the
//! tools answer is only ever what lies under the root.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cap_std::fs::Dir;
use globset::{GlobBuilder, GlobMatcher};
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::{DirEntry, WalkBuilder, WalkState};
use tokio_util::sync::CancellationToken;

use super::confine::{display, io_error, read_options};
use crate::tool::ToolError;

/// A glob pattern, as `glob` and `grep`'s `glob` take it: without a `/` it matches file names at
/// any depth (`*.rs`); with one, the whole path relative to the directory searched
/// (`src/**/*.rs`, where `*` stays within one directory and `**` crosses any number).
#[derive(Clone, Debug)]
pub(super) struct NamePattern {
    matcher: GlobMatcher,
    names_only: bool,
}

impl NamePattern {
    /// Compiles `pattern`, or says what is wrong with it.
    pub(super) fn new(pattern: &str) -> Result<NamePattern, ToolError> {
        let trimmed = pattern.trim();
        let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(ToolError::invalid_arguments("the glob pattern is empty; try `**/*.rs` or `*.md`"));
        }
        if trimmed.starts_with('/') {
            return Err(ToolError::invalid_arguments(format!(
                "the glob pattern `{pattern}` is absolute; patterns are relative to the directory searched"
            )));
        }
        if trimmed.split('/').any(|part| part == "..") {
            return Err(ToolError::invalid_arguments(format!(
                "the glob pattern `{pattern}` contains `..`; patterns only match under the directory searched"
            )));
        }
        let glob = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| ToolError::invalid_arguments(format!("invalid glob pattern `{pattern}`: {}", e.kind())))?;
        Ok(NamePattern { matcher: glob.compile_matcher(), names_only: !trimmed.contains('/') })
    }

    /// Whether the file at `path` (relative to the directory searched) matches.
    fn matches(&self, path: &Path) -> bool {
        if self.names_only {
            path.file_name().is_some_and(|name| self.matcher.is_match(name))
        } else {
            self.matcher.is_match(path)
        }
    }
}

/// Where a search starts: the root's canonical path and the directory or file searched, relative
/// to the root and resolved through the root's handle (symbolic links inside the root followed,
/// any that lead out refused).
pub(super) struct Start {
    root: PathBuf,
    relative: PathBuf,
    is_dir: bool,
}

impl Start {
    /// Resolves `path` (already checked to be relative) under the root.
    pub(super) fn resolve(dir: &Dir, root: PathBuf, path: &Path, shown: &str) -> Result<Start, ToolError> {
        let relative = dir.canonicalize(path).map_err(|e| io_error(shown, &e))?;
        let meta = dir.metadata(&relative).map_err(|e| io_error(shown, &e))?;
        Ok(Start { root, relative, is_dir: meta.is_dir() })
    }

    /// The ignore rules of the directories between the root and the start, which a walk that
    /// starts below the root would not read itself (nothing above the root is ever read).
    fn ancestor_rules(&self) -> Vec<Gitignore> {
        let mut rules = Vec::new();
        let mut dir = self.root.clone();
        let mut components: Vec<_> = self.relative.components().collect();
        components.pop(); // the start itself: the walk reads its rules
        for component in std::iter::once(None).chain(components.into_iter().map(Some)) {
            if let Some(component) = component {
                dir.push(component);
            }
            let mut builder = GitignoreBuilder::new(&dir);
            for name in [".gitignore", ".ignore"] {
                let file = dir.join(name);
                if file.is_file() {
                    let _ = builder.add(file);
                }
            }
            if let Ok(rules_here) = builder.build()
                && !rules_here.is_empty()
            {
                rules.push(rules_here);
            }
        }
        rules.reverse(); // deepest first: the nearest rule decides
        rules
    }

    /// A walker over the start: `.gitignore` (with or without a git repository), `.ignore` and
    /// `.git/info/exclude` honoured, hidden files skipped, symbolic links not followed, nothing
    /// above the root read.
    fn walker(&self) -> WalkBuilder {
        let mut builder = WalkBuilder::new(self.root.join(&self.relative));
        builder
            .hidden(true)
            .parents(false)
            .ignore(true)
            .git_ignore(true)
            .git_global(false)
            .git_exclude(true)
            .require_git(false)
            .follow_links(false);
        let rules = self.ancestor_rules();
        if !rules.is_empty() {
            let rules = Arc::new(rules);
            builder.filter_entry(move |entry| {
                if entry.depth() == 0 {
                    return true; // the start itself was asked for
                }
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                // Each rule's directory is an ancestor of the start; the check keeps the matcher's
                // precondition (a path under its directory) true whatever the walk yields.
                for rule in rules.iter().filter(|rule| entry.path().starts_with(rule.path())) {
                    let decision = rule.matched_path_or_any_parents(entry.path(), is_dir);
                    if decision.is_ignore() {
                        return false;
                    }
                    if decision.is_whitelist() {
                        return true;
                    }
                }
                true
            });
        }
        builder
    }

    /// `entry`'s path relative to the root, if it is under it.
    fn relative_of(&self, entry: &DirEntry) -> Option<PathBuf> {
        entry.path().strip_prefix(&self.root).ok().map(Path::to_path_buf)
    }

    /// `entry`'s path relative to the start (what patterns match).
    fn within_start(&self, relative: &Path) -> PathBuf {
        if self.is_dir {
            relative.strip_prefix(&self.relative).map(Path::to_path_buf).unwrap_or_else(|_| relative.to_path_buf())
        } else {
            relative.file_name().map(PathBuf::from).unwrap_or_default()
        }
    }
}

/// `glob`: the files under the start whose path matches `pattern`, sorted, at most `max`.
pub(super) fn glob(
    dir: &Dir,
    start: &Start,
    pattern: &NamePattern,
    max: usize,
    cancel: &CancellationToken,
) -> Result<String, ToolError> {
    let mut found = Vec::new();
    for entry in start.walker().build() {
        if cancel.is_cancelled() {
            return Err(ToolError::with_kind(crate::tool::ToolErrorKind::Cancelled, "glob was cancelled"));
        }
        let Ok(entry) = entry else { continue };
        let Some(file_type) = entry.file_type() else { continue };
        if file_type.is_dir() {
            continue;
        }
        let Some(relative) = start.relative_of(&entry) else { continue };
        if !pattern.matches(&start.within_start(&relative)) {
            continue;
        }
        // Checked through the handle: the path is under the root now, and is (or links to) a file.
        let is_file = match dir.symlink_metadata(&relative) {
            Ok(meta) if meta.is_file() => true,
            Ok(meta) if meta.is_symlink() => dir.metadata(&relative).is_ok_and(|m| m.is_file()),
            _ => false,
        };
        if is_file {
            found.push(display(&relative));
        }
    }
    found.sort();
    let total = found.len();
    if total == 0 {
        return Ok("No files match.".to_string());
    }
    found.truncate(max);
    let mut out = found.join("\n");
    if total > max {
        out.push_str(&format!("\n[{} more files not shown; narrow the pattern or the path]", total - max));
    }
    Ok(out)
}

/// What `grep` looks for and how much it shows.
pub(super) struct GrepQuery {
    /// The compiled regular expression.
    pub matcher: RegexMatcher,
    /// Only files whose path matches.
    pub only: Option<NamePattern>,
    /// The most matching lines shown.
    pub max_matches: usize,
    /// The most characters of a line shown.
    pub max_line_chars: usize,
}

impl GrepQuery {
    /// Compiles `pattern` (Rust regex syntax, matched per line).
    pub(super) fn matcher(pattern: &str, case_insensitive: bool) -> Result<RegexMatcher, ToolError> {
        if pattern.is_empty() {
            return Err(ToolError::invalid_arguments("the pattern is empty"));
        }
        RegexMatcherBuilder::new()
            .case_insensitive(case_insensitive)
            .line_terminator(Some(b'\n'))
            .build(pattern)
            .map_err(|e| ToolError::invalid_arguments(format!("invalid regular expression: {e}")))
    }
}

/// The matching lines of one file.
struct FileSink<'a> {
    lines: &'a mut Vec<(u64, String)>,
    count: u64,
    keep: usize,
    max_line_chars: usize,
    binary: bool,
}

impl Sink for FileSink<'_> {
    type Error = io::Error;

    fn matched(&mut self, _searcher: &Searcher, found: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.count += 1;
        if self.lines.len() < self.keep {
            let line = String::from_utf8_lossy(found.bytes());
            let line = line.trim_end_matches(['\n', '\r']);
            self.lines.push((found.line_number().unwrap_or(0), shorten(line, self.max_line_chars)));
        }
        Ok(true)
    }

    fn binary_data(&mut self, _searcher: &Searcher, _offset: u64) -> Result<bool, io::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// `line`, cut after `max` characters with a note of how many were left out.
fn shorten(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        None => line.to_string(),
        Some((cut, _)) => format!("{}… [{} more characters]", &line[..cut], line[cut..].chars().count()),
    }
}

/// The matches found so far, by path, trimmed to the first `max` lines in path order as they
/// come in, so memory stays bounded and the answer does not depend on the walk's order.
struct Found {
    files: BTreeMap<String, Vec<(u64, String)>>,
    kept: usize,
    max: usize,
    matches: u64,
    matching_files: u64,
}

impl Found {
    fn add(&mut self, path: String, lines: Vec<(u64, String)>, count: u64) {
        self.matches += count;
        self.matching_files += 1;
        if self.kept >= self.max && self.files.last_key_value().is_some_and(|(last, _)| *last < path) {
            return;
        }
        self.kept += lines.len();
        self.files.insert(path, lines);
        while self.kept > self.max {
            let excess = self.kept - self.max;
            let Some(mut last) = self.files.last_entry() else { break };
            let len = last.get().len();
            if len <= excess {
                last.remove();
                self.kept -= len;
            } else {
                last.get_mut().truncate(len - excess);
                self.kept = self.max;
            }
        }
    }
}

/// `grep`: the lines matching `query` in the text files under the start, as `path:line:text`,
/// sorted by path and line, at most `query.max_matches` of them. Binary files (a NUL byte) and
/// anything but regular files are skipped.
pub(super) fn grep(
    dir: &Arc<Dir>,
    start: &Start,
    query: &GrepQuery,
    cancel: &CancellationToken,
) -> Result<String, ToolError> {
    let found =
        Mutex::new(Found { files: BTreeMap::new(), kept: 0, max: query.max_matches, matches: 0, matching_files: 0 });
    let single = !start.is_dir;
    start.walker().build_parallel().run(|| {
        let mut searcher = SearcherBuilder::new()
            .line_number(true)
            .binary_detection(BinaryDetection::quit(0))
            .heap_limit(Some(64 * 1024 * 1024))
            .build();
        let (found, dir) = (&found, dir.clone());
        Box::new(move |entry| {
            if cancel.is_cancelled() {
                return WalkState::Quit;
            }
            let Ok(entry) = entry else { return WalkState::Continue };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return WalkState::Continue;
            }
            let Some(relative) = start.relative_of(&entry) else { return WalkState::Continue };
            if let Some(only) = &query.only
                && !single
                && !only.matches(&start.within_start(&relative))
            {
                return WalkState::Continue;
            }
            // Opened through the handle: under the root, never blocking, a regular file.
            let Ok(file) = dir.open_with(&relative, &read_options()) else { return WalkState::Continue };
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return WalkState::Continue;
            }
            let file = file.into_std();
            let mut lines = Vec::new();
            let mut sink = FileSink {
                lines: &mut lines,
                count: 0,
                keep: query.max_matches,
                max_line_chars: query.max_line_chars,
                binary: false,
            };
            let searched = searcher.search_file(&query.matcher, &file, &mut sink);
            let (count, binary) = (sink.count, sink.binary);
            if searched.is_ok() && !binary && count > 0 {
                found.lock().unwrap_or_else(PoisonError::into_inner).add(display(&relative), lines, count);
            }
            WalkState::Continue
        })
    });
    if cancel.is_cancelled() {
        return Err(ToolError::with_kind(crate::tool::ToolErrorKind::Cancelled, "grep was cancelled"));
    }
    let found = found.into_inner().unwrap_or_else(PoisonError::into_inner);
    if found.matches == 0 {
        return Ok("No matches.".to_string());
    }
    let mut out = String::new();
    for (path, lines) in &found.files {
        for (line, text) in lines {
            out.push_str(&format!("{path}:{line}:{text}\n"));
        }
    }
    if found.matches > found.kept as u64 {
        out.push_str(&format!(
            "[showing {} of {} matching lines in {} files; narrow the pattern, the path or the glob to see the rest]\n",
            found.kept, found.matches, found.matching_files
        ));
    }
    out.truncate(out.trim_end_matches('\n').len());
    Ok(out)
}

#[cfg(test)]
impl NamePattern {
    /// [`NamePattern::matches`] on a `/`-separated path.
    pub(super) fn matches_for_test(&self, path: &str) -> bool {
        self.matches(Path::new(path))
    }
}
