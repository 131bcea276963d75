//! `loom runs prune --older-than DURATION`: retention over a SQLite journal written by `loom run`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn loom(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    for var in ["LOOM_MODEL", "LOOM_JOURNAL", "OPENAI_BASE_URL"] {
        cmd.env_remove(var);
    }
    cmd.args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn prune_deletes_finished_runs_older_than_the_age() {
    let dir = std::env::temp_dir().join(format!("loom-cli-prune-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    for prompt in ["one", "two"] {
        let out = loom(&["run", "--model", "echo", "--journal", &url, prompt]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let listed = stdout(&loom(&["runs", "list", "--journal", &url, "--json"]));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // Nothing finished 30 days ago.
    let out = loom(&["runs", "prune", "--older-than", "30d", "--journal", &url, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["runs"], 0, "{v}");
    assert_eq!(stdout(&loom(&["runs", "list", "--journal", &url, "--json"])).lines().count(), 2);
    // Everything finished more than 1 ms ago.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = loom(&["runs", "prune", "--older-than", "1ms", "--journal", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with("pruned 2 run(s)"), "{}", stdout(&out));
    assert_eq!(stdout(&loom(&["runs", "list", "--journal", &url, "--json"])).lines().count(), 0);
    // A duration that does not parse: a usage error.
    let out = loom(&["runs", "prune", "--older-than", "thirty days", "--journal", &url]);
    assert_eq!(out.status.code(), Some(2));
    // A journal that does not exist is not created.
    let missing = format!("sqlite:{}", dir.join("missing.db").display());
    assert_eq!(loom(&["runs", "prune", "--older-than", "1d", "--journal", &missing]).status.code(), Some(2));
    assert!(!dir.join("missing.db").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
