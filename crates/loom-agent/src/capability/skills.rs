//! The skills capability: folders with a `SKILL.md` (the Agent Skills format), listed in the
//! agent's instructions and loaded on demand with the `load_skill` tool.
//!
//! A skill is a folder with a `SKILL.md` that starts with YAML front matter:
//!
//! ```text
//! ---
//! name: release-notes
//! description: Write release notes from the git log. Use when asked for a changelog.
//! allowed-tools: bash read_file      # optional: a list, or names separated by spaces or commas
//! ---
//! The instructions (the body), read by the model when it loads the skill.
//! ```
//!
//! The folder is read once, when the capability is made: a `SKILL.md` whose front matter is
//! malformed fails [`skills`](super::skills) with an error naming the file (a broken skill is a
//! configuration mistake, not something to skip quietly). Only the names and descriptions enter
//! the agent's instructions; a body enters the context only when the model calls `load_skill`,
//! which also lists the other files of the skill's folder (reading them is left to the files
//! capability).
//!
//! `allowed-tools` restricts what the model may call while the skill is active: from the moment
//! `load_skill` returned it in a run until the run ends, a `before_tool` hook (added to the agent
//! with the capability, see [`Capability::hooks`]) denies every tool not on the list; `load_skill`
//! itself stays allowed. With several skills loaded, each restricts: a tool must be allowed by
//! every active skill that has a list. An entry matches a tool by name, ignoring case and anything
//! from a `(` on (`Bash(git:*)` allows `bash`). A skill is active in the run that loaded it only: a
//! resumed run whose `load_skill` result came from its journal does not restore the restriction.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use serde_json::{Value, json};

use super::Capability;
use crate::governance::{Hooks, Scope, ToolHookAction};
use crate::message::ToolCall;
use crate::run::RunResult;
use crate::tool::{Tool, ToolContext, ToolError, ToolErrorKind, ToolFlags, ToolOutput};

/// The file that makes a folder a skill.
pub const SKILL_FILE: &str = "SKILL.md";

/// The most files `load_skill` lists for one skill.
const MAX_LISTED_FILES: usize = 200;

/// Why a skills folder could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkillError {
    /// The skills folder (or a file in it) could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `SKILL.md` has no front matter, front matter that is not valid YAML, or is missing a
    /// field.
    #[error("`{path}`: {message}")]
    Malformed {
        /// The `SKILL.md`.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Two skills have the same name.
    #[error("two skills are named `{name}`: `{first}` and `{second}`")]
    Duplicate {
        /// The name.
        name: String,
        /// One `SKILL.md`.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
}

impl From<SkillError> for crate::Error {
    fn from(error: SkillError) -> Self {
        crate::Error::Config(error.to_string())
    }
}

/// One skill, as read from its `SKILL.md`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skill {
    name: String,
    description: String,
    allowed_tools: Option<Vec<String>>,
    dir: PathBuf,
    body: String,
}

impl Skill {
    /// Its name (from the front matter).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When to use it (from the front matter).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The tools the model may call while it is active; `None` for no restriction.
    pub fn allowed_tools(&self) -> Option<&[String]> {
        self.allowed_tools.as_deref()
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its instructions: `SKILL.md` after the front matter.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Whether the skill lets the model call `tool` (always, without `allowed-tools`).
    pub fn allows(&self, tool: &str) -> bool {
        let Some(allowed) = &self.allowed_tools else { return true };
        allowed.iter().any(|entry| {
            let name = entry.split('(').next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case(tool)
        })
    }
}

/// Which skills each live run has loaded: run id → indexes into the skill list.
type Active = Arc<Mutex<HashMap<String, Vec<usize>>>>;

fn lock(active: &Active) -> MutexGuard<'_, HashMap<String, Vec<usize>>> {
    // The map holds plain data: a panic elsewhere while it was held leaves nothing half-done.
    active.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The skills of one folder: the `load_skill` tool, the skill list in the instructions, and the
/// hook that enforces `allowed-tools` (see the [module docs](self)).
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("loom-doc-skills-{}", std::process::id()));
/// # std::fs::create_dir_all(dir.join("greet")).unwrap();
/// # std::fs::write(dir.join("greet/SKILL.md"), "---\nname: greet\ndescription: Greet people.\n---\nSay hello.\n").unwrap();
/// let skills = loom_agent::capability::skills(&dir)?;
/// assert_eq!(skills.skills()[0].name(), "greet");
/// let agent = loom_agent::Agent::builder().model("echo").capability(skills).build()?;
/// assert!(agent.tools().iter().any(|t| t.name == "load_skill"));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), loom_agent::Error>(())
/// ```
#[derive(Clone)]
pub struct Skills {
    skills: Arc<[Skill]>,
    active: Active,
}

impl fmt::Debug for Skills {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Skills").field("skills", &self.skills.iter().map(Skill::name).collect::<Vec<_>>()).finish()
    }
}

impl Skills {
    /// Reads every subfolder of `dir` that holds a `SKILL.md` (other entries are ignored).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, SkillError> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SkillError::Io { path, source }
        };
        let mut skills: Vec<Skill> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let folder = entry.path();
            let file = folder.join(SKILL_FILE);
            if !folder.is_dir() || !file.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&file).map_err(io(&file))?;
            let skill =
                parse(&text, &folder).map_err(|message| SkillError::Malformed { path: file.clone(), message })?;
            if let Some(other) = skills.iter().find(|s| s.name == skill.name) {
                return Err(SkillError::Duplicate {
                    name: skill.name,
                    first: other.dir.join(SKILL_FILE),
                    second: file,
                });
            }
            skills.push(skill);
        }
        skills.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Skills { skills: skills.into(), active: Arc::default() })
    }

    /// The skills, by name.
    pub fn skills(&self) -> &[Skill] {
        &self.skills
    }

    fn names(&self) -> String {
        if self.skills.is_empty() {
            return "none".to_string();
        }
        self.skills.iter().map(Skill::name).collect::<Vec<_>>().join(", ")
    }
}

/// The front matter of a `SKILL.md`; other keys (`license`, `metadata`, …) are allowed and unused.
#[derive(Deserialize)]
struct FrontMatter {
    name: Option<String>,
    description: Option<String>,
    #[serde(rename = "allowed-tools")]
    allowed_tools: Option<ToolList>,
}

/// `allowed-tools`: a YAML list, or one string of names separated by spaces or commas.
#[derive(Deserialize)]
#[serde(untagged)]
enum ToolList {
    List(Vec<String>),
    Text(String),
}

impl ToolList {
    fn names(self) -> Vec<String> {
        let items = match self {
            ToolList::List(items) => items,
            ToolList::Text(text) => vec![text],
        };
        let mut names = Vec::new();
        for item in items {
            // Split on commas and on spaces outside parentheses (`Bash(git add:*)` is one entry).
            let mut depth = 0usize;
            let mut current = String::new();
            for c in item.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                if depth == 0 && (c == ',' || c.is_whitespace()) {
                    names.extend((!current.is_empty()).then(|| std::mem::take(&mut current)));
                } else {
                    current.push(c);
                }
            }
            names.extend((!current.is_empty()).then_some(current));
        }
        names
    }
}

/// Parses one `SKILL.md`: front matter between `---` lines, then the body.
fn parse(text: &str, dir: &Path) -> Result<Skill, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        return Err("no front matter: the file must start with a `---` line, then `name:` and `description:`".into());
    }
    let mut yaml = String::new();
    let mut closed = false;
    for line in lines.by_ref() {
        if matches!(line.trim_end(), "---" | "...") {
            closed = true;
            break;
        }
        yaml.push_str(line);
    }
    if !closed {
        return Err("the front matter is not closed by a `---` line".into());
    }
    let body: String = lines.collect();
    let front: FrontMatter = yaml_serde::from_str(&yaml).map_err(|e| format!("the front matter is not valid: {e}"))?;
    let name = front.name.map(|n| n.trim().to_string()).unwrap_or_default();
    if name.is_empty() {
        return Err("the front matter has no `name`".into());
    }
    let valid_name = name.len() <= 64
        && name
            .split('-')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    if !valid_name {
        return Err(format!(
            "the name `{name}` is not valid: use at most 64 lowercase letters, digits and single hyphens"
        ));
    }
    let description = front.description.map(|d| d.trim().to_string()).unwrap_or_default();
    if description.is_empty() {
        return Err("the front matter has no `description`".into());
    }
    Ok(Skill {
        name,
        description,
        allowed_tools: front.allowed_tools.map(ToolList::names),
        dir: dir.to_path_buf(),
        body: body.trim().to_string(),
    })
}

impl Capability for Skills {
    fn name(&self) -> &str {
        "skills"
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        vec![Arc::new(LoadSkill { skills: self.clone() })]
    }

    fn instructions(&self) -> Option<String> {
        if self.skills.is_empty() {
            return None;
        }
        let mut text = String::from(
            "Skills hold instructions for particular tasks. When a task matches a skill's description, call \
             load_skill with its name before you start, and follow what it says. The skills:",
        );
        for skill in self.skills.iter() {
            text.push_str(&format!("\n- {}: {}", skill.name, skill.description));
        }
        Some(text)
    }

    fn hooks(&self) -> Option<Arc<dyn Hooks>> {
        Some(Arc::new(AllowedTools { skills: self.clone() }))
    }
}

/// The `load_skill` tool.
struct LoadSkill {
    skills: Skills,
}

#[async_trait::async_trait]
impl Tool for LoadSkill {
    fn name(&self) -> &str {
        "load_skill"
    }

    fn description(&self) -> &str {
        "Load a skill by name: returns its instructions and lists the files in its folder."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"name": {"type": "string", "description": format!("The skill's name: one of {}", self.skills.names())}},
            "required": ["name"],
            "additionalProperties": false
        })
    }

    fn flags(&self) -> ToolFlags {
        ToolFlags::new().read_only().idempotent().concurrency_safe()
    }

    async fn call(&self, ctx: ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let name = args.get("name").and_then(Value::as_str).unwrap_or_default().trim();
        let Some(index) = self.skills.skills.iter().position(|s| s.name == name) else {
            return Err(ToolError::with_kind(
                ToolErrorKind::NotFound,
                format!("there is no skill named `{name}`; the skills are: {}", self.skills.names()),
            ));
        };
        let skill = &self.skills.skills[index];
        let dir = skill.dir.clone();
        let files = tokio::task::spawn_blocking(move || list_files(&dir))
            .await
            .map_err(|e| ToolError::new(format!("listing the skill's files failed: {e}")))?;
        let mut text = format!("# Skill: {}\nFolder: {}\n\n{}\n", skill.name, skill.dir.display(), skill.body);
        if files.0.is_empty() {
            text.push_str("\nThe skill's folder holds no other files.\n");
        } else {
            text.push_str("\nFiles in the skill's folder (paths relative to it):\n");
            for file in &files.0 {
                text.push_str(&format!("- {file}\n"));
            }
            if files.1 > 0 {
                text.push_str(&format!("[{} more files not listed]\n", files.1));
            }
        }
        if let Some(allowed) = &skill.allowed_tools {
            text.push_str(&format!(
                "\nWhile this skill is active you may call only these tools (and load_skill): {}\n",
                allowed.join(", ")
            ));
        }
        let mut active = lock(&self.skills.active);
        let loaded = active.entry(ctx.run_id().to_string()).or_default();
        if !loaded.contains(&index) {
            loaded.push(index);
        }
        Ok(ToolOutput::text(text.trim_end().to_string()))
    }
}

/// The files under a skill's folder but its `SKILL.md`, relative to it, sorted; symbolic links are
/// listed, not followed. At most [`MAX_LISTED_FILES`], and how many more there were.
fn list_files(dir: &Path) -> (Vec<String>, usize) {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir)
                && relative != Path::new(SKILL_FILE)
            {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    let more = files.len().saturating_sub(MAX_LISTED_FILES);
    files.truncate(MAX_LISTED_FILES);
    (files, more)
}

/// Denies tools that an active skill does not allow; forgets a run's skills when it ends.
struct AllowedTools {
    skills: Skills,
}

#[async_trait::async_trait]
impl Hooks for AllowedTools {
    async fn before_tool(&self, scope: &Scope, call: &ToolCall, _args: &Value) -> ToolHookAction {
        if call.name == "load_skill" {
            return ToolHookAction::Continue;
        }
        let active = lock(&self.skills.active);
        let Some(loaded) = active.get(&*scope.run_id) else { return ToolHookAction::Continue };
        for skill in loaded.iter().filter_map(|&i| self.skills.skills.get(i)) {
            if !skill.allows(&call.name) {
                let allowed = skill.allowed_tools.as_deref().unwrap_or_default().join(", ");
                return ToolHookAction::Deny(format!(
                    "the active skill `{}` allows only these tools: {allowed} (and load_skill)",
                    skill.name
                ));
            }
        }
        ToolHookAction::Continue
    }

    async fn after_run(&self, scope: &Scope, _result: &RunResult) {
        lock(&self.skills.active).remove(&*scope.run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_tools_take_lists_and_separated_strings() {
        let parse_list = |yaml: &str| -> Vec<String> {
            let front: FrontMatter = yaml_serde::from_str(yaml).unwrap();
            front.allowed_tools.map(ToolList::names).unwrap_or_default()
        };
        assert_eq!(parse_list("allowed-tools: [bash, read_file]"), ["bash", "read_file"]);
        assert_eq!(parse_list("allowed-tools: bash read_file"), ["bash", "read_file"]);
        assert_eq!(parse_list("allowed-tools: bash, read_file"), ["bash", "read_file"]);
        assert_eq!(parse_list("allowed-tools: Bash(git add:*) Read"), ["Bash(git add:*)", "Read"]);
        assert!(parse_list("name: x").is_empty());
    }

    #[test]
    fn entries_match_tools_by_name() {
        let skill =
            parse("---\nname: a\ndescription: d\nallowed-tools: Bash(git:*) read_file\n---\n", Path::new(".")).unwrap();
        assert!(skill.allows("bash"));
        assert!(skill.allows("read_file"));
        assert!(!skill.allows("write_file"));
        assert!(!skill.allows("bas"));
        let free = parse("---\nname: b\ndescription: d\n---\nbody", Path::new(".")).unwrap();
        assert!(free.allows("anything"));
        assert_eq!(free.body(), "body");
    }

    #[test]
    fn malformed_front_matter_is_described() {
        let bad = |text: &str| parse(text, Path::new(".")).unwrap_err();
        assert!(bad("no front matter").contains("no front matter"));
        assert!(bad("---\nname: a\n").contains("not closed"));
        assert!(bad("---\nname: [a\n---\n").contains("not valid"));
        assert!(bad("---\ndescription: d\n---\n").contains("no `name`"));
        assert!(bad("---\nname: a\n---\n").contains("no `description`"));
        assert!(bad("---\nname: Not Valid\ndescription: d\n---\n").contains("is not valid"));
    }
}
