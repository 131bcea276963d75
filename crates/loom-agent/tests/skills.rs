//! The skills capability on real skill folders: the instructions list the skills, `load_skill`
//! returns a body and the folder's files, malformed front matter and unknown names are clear
//! errors, and `allowed-tools` holds in a real scripted run from the moment the skill is loaded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use loom_agent::capability::{self, Capability, SkillError, Skills};
use loom_agent::model::ScriptedTurn;
use loom_agent::tool::{ToolContext, ToolErrorKind};
use loom_agent::{Agent, RunState};
use serde_json::json;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-skills-{name}-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Two skills (`pdf` restricted to `read_file`, `notes` unrestricted), a folder without a
/// `SKILL.md` and a stray file.
fn skill_dir() -> PathBuf {
    let dir = scratch("set");
    write(
        &dir.join("pdf/SKILL.md"),
        "---\nname: pdf\ndescription: Extract text from PDF files.\nallowed-tools: [read_file]\nlicense: MIT\n---\n\n# PDF\nRun scripts/extract.py on the file.\n",
    );
    write(&dir.join("pdf/scripts/extract.py"), "print('x')\n");
    write(&dir.join("pdf/reference.md"), "more\n");
    write(
        &dir.join("notes/SKILL.md"),
        "---\nname: notes\ndescription: >-\n  Keep meeting notes\n  tidy.\n---\nWrite bullet points.\n",
    );
    std::fs::create_dir_all(dir.join("not-a-skill")).unwrap();
    write(&dir.join("README.md"), "not a skill\n");
    dir
}

#[test]
fn the_instructions_list_every_skill() {
    let dir = skill_dir();
    let skills = capability::skills(&dir).unwrap();
    let names: Vec<&str> = skills.skills().iter().map(|s| s.name()).collect();
    assert_eq!(names, ["notes", "pdf"]);
    assert_eq!(skills.skills()[0].description(), "Keep meeting notes tidy.");
    assert_eq!(skills.skills()[1].allowed_tools(), Some(&["read_file".to_string()][..]));
    let instructions = skills.instructions().unwrap();
    assert!(
        instructions.contains("\n- notes: Keep meeting notes tidy.\n- pdf: Extract text from PDF files."),
        "{instructions}"
    );
    // The bodies stay out of the instructions until a skill is loaded.
    assert!(!instructions.contains("extract.py"), "{instructions}");
    let agent = Agent::builder().model("echo").instructions("Be brief.").capability(skills).build().unwrap();
    assert!(agent.instructions().starts_with("Be brief.\n\nSkills hold instructions"), "{}", agent.instructions());
    assert!(agent.tools().iter().any(|t| t.name == "load_skill"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn load_skill_returns_the_body_and_lists_the_files() {
    let dir = skill_dir();
    let skills = capability::skills(&dir).unwrap();
    let tool = skills.tools().remove(0);
    assert_eq!(tool.name(), "load_skill");
    assert!(tool.flags().read_only);
    let out = tool.call(ToolContext::detached("run_1", "sess_1"), json!({"name": "pdf"})).await.unwrap().content;
    let expected = format!(
        "# Skill: pdf\nFolder: {}\n\n# PDF\nRun scripts/extract.py on the file.\n\nFiles in the skill's folder (paths relative to it):\n- reference.md\n- scripts/extract.py\n\nWhile this skill is active you may call only these tools (and load_skill): read_file",
        dir.join("pdf").display()
    );
    assert_eq!(out, expected);
    let out = tool.call(ToolContext::detached("run_1", "sess_1"), json!({"name": "notes"})).await.unwrap().content;
    assert!(out.ends_with("Write bullet points.\n\nThe skill's folder holds no other files."), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_unknown_skill_lists_the_available_names() {
    let dir = skill_dir();
    let tool = capability::skills(&dir).unwrap().tools().remove(0);
    let err = tool.call(ToolContext::detached("run_1", "sess_1"), json!({"name": "excel"})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::NotFound);
    assert_eq!(err.message(), "there is no skill named `excel`; the skills are: notes, pdf");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn malformed_front_matter_fails_with_the_files_name() {
    let dir = skill_dir();
    let bad = dir.join("broken/SKILL.md");
    write(&bad, "---\nname: broken\ndescription: [unclosed\n---\nbody\n");
    let err = capability::skills(&dir).unwrap_err();
    assert!(matches!(err, SkillError::Malformed { ref path, .. } if *path == bad), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with(&format!("`{}`: the front matter is not valid", bad.display())), "{message}");
    // Converted for `?` in code returning loom's Error.
    let loom: loom_agent::Error = err.into();
    assert!(loom.to_string().contains("broken/SKILL.md"), "{loom}");

    write(&bad, "name: broken\n");
    let err = capability::skills(&dir).unwrap_err().to_string();
    assert!(err.contains("no front matter"), "{err}");
    write(&bad, "---\nname: pdf\ndescription: again\n---\n");
    let err = capability::skills(&dir).unwrap_err();
    assert!(matches!(err, SkillError::Duplicate { ref name, .. } if name == "pdf"), "{err:?}");
    let missing = capability::skills(dir.join("missing")).unwrap_err();
    assert!(matches!(missing, SkillError::Io { .. }), "{missing:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn allowed_tools_hold_once_the_skill_is_loaded_in_that_run_only() {
    let dir = skill_dir();
    let (model, shared) = scripted([
        // Before the skill: anything goes.
        ScriptedTurn::tool_call("other", json!({"x": "before"})),
        ScriptedTurn::tool_call("load_skill", json!({"name": "pdf"})),
        // After: read_file is allowed, other is not.
        ScriptedTurn::tool_call("read_file", json!({"x": "after"})).with_tool_call("other", json!({"x": "after"})),
        // load_skill itself stays allowed.
        ScriptedTurn::tool_call("load_skill", json!({"name": "notes"})),
        ScriptedTurn::text("done"),
        // A second run on the same agent starts without the skill.
        ScriptedTurn::tool_call("other", json!({"x": "next run"})),
        ScriptedTurn::text("done again"),
    ]);
    let agent = Agent::builder()
        .model(shared)
        .tool(echo_tool("read_file"))
        .tool(echo_tool("other"))
        .capability(capability::skills(&dir).unwrap())
        .build()
        .unwrap();
    let result = within(30, "the run", agent.start("extract").result()).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    let outputs: Vec<(String, String, bool)> =
        tool_results(&result.events).into_iter().map(|r| (r.name, r.output, r.is_error)).collect();
    assert_eq!(outputs[0], ("other".into(), "other:before".into(), false));
    assert_eq!(outputs[1].0, "load_skill");
    assert_eq!(outputs[2], ("read_file".into(), "read_file:after".into(), false));
    assert_eq!(
        outputs[3],
        (
            "other".into(),
            "Error: denied by hook: the active skill `pdf` allows only these tools: read_file (and load_skill)".into(),
            true
        )
    );
    assert_eq!(outputs[4].0, "load_skill");
    assert!(!outputs[4].2, "{:?}", outputs[4]);
    // The model read the denial.
    let seen = tool_messages(&model.requests()[3].messages);
    assert!(
        seen.iter().any(|(_, content, is_error)| *is_error && content.contains("allows only these tools")),
        "{seen:?}"
    );

    let result = within(30, "the second run", agent.start("again").result()).await;
    let outputs = tool_results(&result.events);
    assert_eq!(outputs[0].output, "other:next run");
    assert!(!outputs[0].is_error);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_empty_folder_has_no_skills_and_no_instructions() {
    let dir = scratch("empty");
    let skills = Skills::load(&dir).unwrap();
    assert!(skills.skills().is_empty());
    assert!(skills.instructions().is_none());
    std::fs::remove_dir_all(&dir).ok();
}
