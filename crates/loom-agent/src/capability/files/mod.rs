//! The file capability: `read_file`, `list_files`, `glob` and `grep`, and when writable
//! `write_file` and `edit_file`, all confined to one directory.
//!
//! - `confine.rs`: the root's directory handle, path checks, and the errors the model reads.
//! - `read.rs`: `read_file` (line windows, a byte cap, binary files refused) and `list_files`.
//! - `search.rs`: `glob` and `grep` (walks honouring `.gitignore`, ripgrep's searcher).
//! - `write.rs`: `write_file` and `edit_file` (atomic: a temporary file, then a rename).

mod confine;
mod read;
mod search;
mod write;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::Capability;
use crate::tool::{FunctionTool, Tool, ToolContext, ToolError, ToolOutput, parse_arguments};
use confine::Root;

/// File tools confined to one root directory: read-only unless made [`writable`](Files::writable).
///
/// | tool | does | flags |
/// |---|---|---|
/// | `read_file` | a text file, or a window of its lines (`offset`, `limit`) | read-only, idempotent, concurrency-safe |
/// | `list_files` | a directory's entries | read-only, idempotent, concurrency-safe |
/// | `glob` | files whose path matches a pattern such as `src/**/*.rs` | read-only, idempotent, concurrency-safe |
/// | `grep` | lines matching a regular expression, as `path:line:text` | read-only, idempotent, concurrency-safe |
/// | `write_file` | creates or replaces a file (writable only) | destructive, idempotent |
/// | `edit_file` | replaces an exact, unique string in a file (writable only) | destructive |
///
/// Write and edit tools are `destructive`, so the default permissions ask for approval before each
/// call (and deny it when no approval handler is set).
///
/// **Confinement.** Paths are relative to the root. Every file and directory is opened through a
/// handle on the root, opened once (`cap_std::fs::Dir`; on Linux each open is
/// `openat2(RESOLVE_BENEATH)`), so absolute paths, `..` that climbs out, and symbolic links that
/// lead out (to a file or through a directory, absolute link targets included) are refused by the
/// open itself, and a path swapped for a link between a check and its use cannot lead out either.
/// A path outside the root gets the same answer as a path that does not exist, so the tools reveal
/// nothing about what lies outside. Only regular files are read, opened without blocking (a FIFO or
/// a device is refused, never waited on).
///
/// **Limits.** `read_file` returns at most [`max_read_bytes`](Files::max_read_bytes) of a file
/// (256 KiB by default) and at most 2,000 lines unless the model asks for more; memory stays
/// bounded by the cap however large the file is. Files with NUL bytes or invalid UTF-8 in their
/// first 8 KiB are refused as binary. `list_files` and `glob` show at most
/// [`max_entries`](Files::max_entries) names (1,000), `grep` at most
/// [`max_matches`](Files::max_matches) lines (200), each cut after 300 characters.
///
/// **Walks.** `glob` and `grep` skip hidden files and directories and honour `.gitignore` (also
/// outside a git repository), `.ignore` and `.git/info/exclude` from the root down; nothing above
/// the root is read. They do not follow symbolic links. `grep` skips binary files.
///
/// ```
/// use loom_agent::capability::{self, Files};
///
/// let read_only = capability::files(".").read_only();
/// let writable = capability::files("./workspace").writable().max_read_bytes(64 * 1024);
/// let same_as_read_only: Files = Files::new(".");
/// # let _ = (read_only, writable, same_as_read_only);
/// ```
#[derive(Clone, Debug)]
pub struct Files {
    root: PathBuf,
    writable: bool,
    max_read_bytes: usize,
    max_entries: usize,
    max_matches: usize,
}

/// File tools under `root`, read-only until [`Files::writable`] is called.
///
/// ```
/// use loom_agent::capability;
///
/// let files = capability::files("."); // read_file, list_files, glob, grep
/// # let _ = files;
/// ```
pub fn files(root: impl Into<PathBuf>) -> Files {
    Files { root: root.into(), writable: false, max_read_bytes: 256 * 1024, max_entries: 1000, max_matches: 200 }
}

/// The most lines one `read_file` call shows when the model does not say.
const DEFAULT_LINES: u64 = 2000;

/// The most characters of one matching line `grep` shows.
const MAX_LINE_CHARS: usize = 300;

/// The largest file `edit_file` edits.
const MAX_EDIT_BYTES: u64 = 16 * 1024 * 1024;

impl Files {
    /// Read-only access under `root`: the same as [`files`]`(root)`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        files(root)
    }

    /// Only the read tools: `read_file`, `list_files`, `glob`, `grep` (the default).
    pub fn read_only(mut self) -> Self {
        self.writable = false;
        self
    }

    /// Adds `write_file` and `edit_file` (both destructive: the default permissions ask before
    /// each call).
    pub fn writable(mut self) -> Self {
        self.writable = true;
        self
    }

    /// Whether the write tools are offered.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The root directory.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The most bytes of a file one `read_file` call returns (and holds in memory); at least 1.
    pub fn max_read_bytes(mut self, n: usize) -> Self {
        self.max_read_bytes = n.max(1);
        self
    }

    /// The most names one `list_files` or `glob` call returns.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// The most matching lines one `grep` call returns.
    pub fn max_matches(mut self, n: usize) -> Self {
        self.max_matches = n;
        self
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ToolError> + Send + 'static,
) -> Result<T, ToolError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ToolError::new(format!("the file tool stopped: {e}")))?
}

/// A read tool: read-only, idempotent, concurrency-safe.
fn read_tool<A, F>(name: &'static str, description: &str, schema: Value, root: &Arc<Root>, run: F) -> FunctionTool
where
    A: for<'de> Deserialize<'de> + Send + 'static,
    F: Fn(&Root, A, ToolContext) -> Result<String, ToolError> + Send + Sync + 'static,
{
    file_tool(name, description, schema, root, run).read_only().idempotent().concurrency_safe()
}

/// A tool whose body runs on a blocking thread with the parsed arguments.
fn file_tool<A, F>(name: &'static str, description: &str, schema: Value, root: &Arc<Root>, run: F) -> FunctionTool
where
    A: for<'de> Deserialize<'de> + Send + 'static,
    F: Fn(&Root, A, ToolContext) -> Result<String, ToolError> + Send + Sync + 'static,
{
    let (root, run) = (root.clone(), Arc::new(run));
    FunctionTool::new(name, description, schema, move |ctx, args| {
        let (root, run) = (root.clone(), run.clone());
        async move {
            let args: A = parse_arguments(name, args)?;
            blocking(move || run(&root, args, ctx)).await.map(ToolOutput::text)
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    offset: Option<u64>,
    limit: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobArgs {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrepArgs {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    case_insensitive: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: bool,
}

/// The schema of an optional directory argument.
fn dir_schema(what: &str) -> Value {
    json!({"type": "string", "description": format!("{what}, relative to the root; `.` (the default) for the root")})
}

impl Capability for Files {
    fn name(&self) -> &str {
        "files"
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let root = Arc::new(Root::new(self.root.clone()));
        let max_bytes = self.max_read_bytes;
        let read = read_tool(
            "read_file",
            "Read a text file under the root. Small files come back whole; otherwise (or when offset or limit is \
             given) a header line such as `[lines 1-2000 of 5120 in src/main.rs; to read on, call read_file with \
             offset=2001]` comes first, then the lines. Binary files are refused.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "File path relative to the root, such as `src/main.rs`"},
                    "offset": {"type": "integer", "minimum": 1, "description": "First line to read, 1-based (default 1)"},
                    "limit": {"type": "integer", "minimum": 1, "description": format!("Most lines to read (default {DEFAULT_LINES})")}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
            &root,
            move |root, args: ReadArgs, _ctx| {
                let path = confine::relative_path(&args.path)?;
                let window = read::Window {
                    offset: args.offset.unwrap_or(1).max(1),
                    limit: args.limit.unwrap_or(DEFAULT_LINES).max(1),
                    ranged: args.offset.is_some() || args.limit.is_some(),
                    max_bytes,
                };
                read::read_file(&*root.dir()?, &path, &args.path, window)
            },
        );
        let max_entries = self.max_entries;
        let list = read_tool(
            "list_files",
            "List the entries of a directory under the root, sorted; directories end with `/`.",
            json!({"type": "object", "properties": {"path": dir_schema("Directory to list")}, "additionalProperties": false}),
            &root,
            move |root, args: ListArgs, _ctx| {
                let shown = args.path.unwrap_or_else(|| ".".into());
                let path = confine::relative_path(&shown)?;
                read::list_files(&*root.dir()?, &path, &shown, max_entries)
            },
        );
        let glob = read_tool(
            "glob",
            "Find files by name: the paths (relative to the root, sorted) of the files under `path` that match \
             `pattern`. A pattern without `/` matches file names at any depth (`*.rs`, `Cargo.toml`); with `/` it \
             matches the path relative to `path` (`src/**/*.rs`: `*` stays within a directory, `**` spans any \
             number; `{a,b}` and `[abc]` work too). Hidden files and files ignored by .gitignore are left out.",
            json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "Glob pattern, such as `**/*.rs` or `*.md`"},
                    "path": dir_schema("Directory to search")
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
            &root,
            move |root, args: GlobArgs, ctx| {
                let pattern = search::NamePattern::new(&args.pattern)?;
                let shown = args.path.unwrap_or_else(|| ".".into());
                let path = confine::relative_path(&shown)?;
                let (dir, root_path) = root.dir_and_path()?;
                let start = search::Start::resolve(&dir, root_path, &path, &shown)?;
                search::glob(&dir, &start, &pattern, max_entries, ctx.cancellation())
            },
        );
        let max_matches = self.max_matches;
        let grep = read_tool(
            "grep",
            "Search file contents with a regular expression (Rust regex syntax, matched line by line): prints \
             `path:line:text` for each matching line, sorted by path and line. Searches the files under `path` (or \
             the one file `path` names), skipping hidden files, files ignored by .gitignore and binary files. \
             `glob` keeps only files whose name or path matches it (`*.rs`, `src/**/*.toml`).",
            json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "Regular expression, such as `fn\\s+main` or `TODO`"},
                    "path": dir_schema("Directory or file to search"),
                    "glob": {"type": "string", "description": "Only search files matching this glob, such as `*.rs`"},
                    "case_insensitive": {"type": "boolean", "description": "Ignore case (default false)"}
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
            &root,
            move |root, args: GrepArgs, ctx| {
                let query = search::GrepQuery {
                    matcher: search::GrepQuery::matcher(&args.pattern, args.case_insensitive)?,
                    only: args.glob.as_deref().map(search::NamePattern::new).transpose()?,
                    max_matches,
                    max_line_chars: MAX_LINE_CHARS,
                };
                let shown = args.path.unwrap_or_else(|| ".".into());
                let path = confine::relative_path(&shown)?;
                let (dir, root_path) = root.dir_and_path()?;
                let start = search::Start::resolve(&dir, root_path, &path, &shown)?;
                search::grep(&dir, &start, &query, ctx.cancellation())
            },
        );
        let mut tools: Vec<Arc<dyn Tool>> = vec![Arc::new(read), Arc::new(list), Arc::new(glob), Arc::new(grep)];
        if self.writable {
            let write = file_tool(
                "write_file",
                "Create a file under the root, or replace its whole content (missing parent directories are \
                 created). The write is atomic. To change part of a file, prefer edit_file.",
                json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "File path relative to the root"},
                        "content": {"type": "string", "description": "The file's complete new content"}
                    },
                    "required": ["path", "content"],
                    "additionalProperties": false
                }),
                &root,
                |root, args: WriteArgs, ctx| {
                    let path = confine::relative_path(&args.path)?;
                    write::write_file(&*root.dir()?, &path, &args.path, &args.content, ctx.cancellation())
                },
            )
            .destructive()
            .idempotent();
            let edit = file_tool(
                "edit_file",
                "Replace exact text in a file under the root: old_string must occur exactly once (copy it from \
                 read_file, with its whitespace and enough surrounding lines to be unique), unless replace_all is \
                 true. Fails, changing nothing, when old_string is missing or not unique. The write is atomic.",
                json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "File path relative to the root"},
                        "old_string": {"type": "string", "description": "The exact text to replace"},
                        "new_string": {"type": "string", "description": "The text to put in its place"},
                        "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)"}
                    },
                    "required": ["path", "old_string", "new_string"],
                    "additionalProperties": false
                }),
                &root,
                |root, args: EditArgs, ctx| {
                    let path = confine::relative_path(&args.path)?;
                    let edit = write::Edit {
                        old: &args.old_string,
                        new: &args.new_string,
                        all: args.replace_all,
                        max_bytes: MAX_EDIT_BYTES,
                    };
                    write::edit_file(&*root.dir()?, &path, &args.path, &edit, ctx.cancellation())
                },
            )
            .destructive();
            tools.push(Arc::new(write));
            tools.push(Arc::new(edit));
        }
        tools
    }

    fn instructions(&self) -> Option<String> {
        let mut text = String::from(
            "You can work with the files under the project root (all paths are relative to it): read_file reads a \
             file (offset and limit read a range of lines), list_files lists a directory, glob finds files by name \
             and grep searches their contents.",
        );
        if self.writable {
            text.push_str(
                " write_file creates or replaces a file and edit_file replaces exact text in one; read a file before \
                 editing it.",
            );
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests;
