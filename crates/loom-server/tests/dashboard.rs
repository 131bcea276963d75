//! The dashboard's HTTP side: the static files at `/ui` (public, typed, with a CSP), and the JSON
//! endpoints it reads — `/usage`, `/audit` (with the chain's verification) and
//! `/runs/{id}/transcript` — each tenant-scoped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dash;
mod support;

use std::sync::Arc;

use loom_agent::governance::{AuditAction, AuditLog, AuditRecord, FileAuditLog};
use loom_agent::run::Scope;
use serde_json::{Value, json};

#[tokio::test]
async fn the_dashboard_files_are_public_typed_and_locked_down() {
    let d = dash::start().await;
    let s = &d.server;
    let r = s.http.get(s.url("/ui")).send().await.unwrap();
    assert_eq!(r.status(), 200, "/ui redirects to /ui/");
    assert_eq!(r.url().path(), "/ui/");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains("./app.js") && page.contains("./style.css"), "{page}");
    for (path, kind, needle) in [
        ("/ui/app.js", "text/javascript", "setUnauthorizedHandler"),
        ("/ui/api.js", "text/javascript", "Authorization"),
        ("/ui/style.css", "text/css", "--accent"),
        ("/ui/vendor/preact.mjs", "text/javascript", "preact 11.2.0"),
        ("/ui/vendor/hooks.mjs", "text/javascript", "from\"./preact.mjs\""),
        ("/ui/vendor/htm.mjs", "text/javascript", "htm 3.1.1"),
    ] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.text().await.unwrap().contains(needle), "{path} has {needle}");
    }
    // A deep link is the page; a missing file is a JSON 404.
    let r = s.http.get(s.url("/ui/runs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("./app.js"));
    let r = s.http.get(s.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    // The data is not public.
    for path in ["/usage", "/audit", "/runs/run_x/transcript"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = s.http.get(s.url(path)).bearer_auth("loom_wrong").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
}

fn group<'a>(usage: &'a Value, user: &str) -> &'a Value {
    usage["groups"].as_array().unwrap().iter().find(|g| g["user_id"] == user).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn usage_sums_tokens_and_cost_by_user_and_day_for_the_tenant_only() {
    let d = dash::start().await;
    let s = &d.server;
    let mut ids = Vec::new();
    for (key, user) in [(&s.key_a, "alice"), (&s.key_a, "alice"), (&s.key_a, "bob"), (&s.key_b, "alice")] {
        let run = s.run(key, json!({"input": "hello", "user_id": user})).await;
        assert_eq!(run["state"], "completed");
        ids.push(run["run_id"].as_str().unwrap().to_string());
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let check = |usage: &Value| {
        assert_eq!(usage["group"], json!(["user", "day"]));
        assert_eq!(usage["groups"].as_array().unwrap().len(), 2, "{usage}");
        let alice = group(usage, "alice");
        assert_eq!(alice["day"], today);
        assert_eq!(
            (&alice["runs"], &alice["input_tokens"], &alice["output_tokens"], &alice["total_tokens"]),
            (&json!(2), &json!(240), &json!(60), &json!(300)),
            "{usage}"
        );
        assert!((alice["cost_usd"].as_f64().unwrap() - 0.004).abs() < 1e-9);
        assert_eq!(group(usage, "bob")["runs"], 1);
        assert_eq!(usage["total"]["runs"], 3);
        assert_eq!(usage["total"]["input_tokens"], 360);
    };
    let (status, usage) = s.get(&s.key_a, "/usage?group=user,day").await;
    assert_eq!(status, 200, "{usage}");
    check(&usage);
    // The other tenant sees its one run, under its own user of the same name.
    let (_, other) = s.get(&s.key_b, "/usage").await;
    assert_eq!(other["total"]["runs"], 1, "{other}");
    assert_eq!(group(&other, "alice")["input_tokens"], 120);
    // By day only.
    let (_, by_day) = s.get(&s.key_a, "/usage?group=day&days=7").await;
    assert_eq!(
        by_day["groups"],
        json!([{
            "day": today, "runs": 3, "input_tokens": 360, "cached_input_tokens": 0, "cache_write_tokens": 0,
            "output_tokens": 90, "total_tokens": 450, "cost_usd": by_day["groups"][0]["cost_usd"].clone(),
        }])
    );
    // A restarted server (no run in memory) counts the same, from the journal and the store.
    for id in &ids {
        s.state.forget_run(id);
    }
    let (_, again) = s.get(&s.key_a, "/usage").await;
    check(&again);
    // Bad queries.
    for q in ["group=month", "group=", "days=0", "days=400", "colour=red"] {
        let (status, body) = s.get(&s.key_a, &format!("/usage?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
}

#[tokio::test]
async fn transcripts_show_tool_calls_and_results_and_are_tenant_scoped() {
    let d = dash::start().await;
    let s = &d.server;
    let run = s.run(&s.key_a, json!({"input": "tool now", "user_id": "alice"})).await;
    assert_eq!(run["state"], "suspended");
    let id = run["run_id"].as_str().unwrap().to_string();
    let (_, list) = s.get(&s.key_a, "/approvals").await;
    let call = list["approvals"][0]["call_id"].as_str().unwrap().to_string();
    let (status, _) = s.post(&s.key_a, &format!("/runs/{id}/approvals/{call}"), json!({"decision": "allow"})).await;
    assert_eq!(status, 200);
    s.wait_for(&s.key_a, &id, "completed").await;
    let check = |t: &Value| {
        assert_eq!(t["run_id"], id.as_str());
        assert_eq!(t["complete"], true);
        let messages = t["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert!(roles.ends_with(&["user", "assistant", "tool", "assistant"]), "{roles:?}");
        let n = messages.len();
        assert_eq!(messages[n - 3]["tool_calls"][0]["name"], "danger");
        assert_eq!(messages[n - 2]["name"], "danger");
        assert!(messages[n - 2]["content"].as_str().unwrap().starts_with("ran with"), "{t}");
        assert!(messages[n - 1]["content"].as_str().unwrap().starts_with("done: ran with"), "{t}");
        assert_eq!(t["usage"]["input_tokens"], 240, "two model calls");
    };
    let path = format!("/runs/{id}/transcript");
    let (status, t) = s.get(&s.key_a, &path).await;
    assert_eq!(status, 200, "{t}");
    check(&t);
    let (status, _) = s.get(&s.key_b, &path).await;
    assert_eq!(status, 404, "another tenant's run is not found");
    let (status, _) = s.get(&s.key_a, "/runs/run_nope/transcript").await;
    assert_eq!(status, 404);
    // From the store, once the server has forgotten the run.
    s.state.forget_run(&id);
    let (status, t) = s.get(&s.key_a, &path).await;
    assert_eq!(status, 200, "{t}");
    check(&t);
    let (status, _) = s.get(&s.key_b, &path).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn audit_shows_the_tenants_entries_and_the_chain_verification() {
    let d = dash::start().await;
    let s = &d.server;
    let mine = s.run(&s.key_a, json!({"input": "hello", "user_id": "alice"})).await;
    let theirs = s.run(&s.key_b, json!({"input": "hello", "user_id": "alice"})).await;
    let (mine, theirs) = (mine["run_id"].as_str().unwrap(), theirs["run_id"].as_str().unwrap());
    let (status, audit) = s.get(&s.key_a, "/audit").await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["configured"], true);
    let log = &audit["logs"][0];
    assert_eq!(log["name"], "audit");
    assert_eq!(log["verification"]["intact"], true, "{log}");
    assert_eq!(log["verification"]["problems"], json!([]));
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["run_finished", "run_started"], "newest first: {audit}");
    assert!(entries.iter().all(|e| e["run_id"] == mine && e["user_id"] == "alice"), "{audit}");
    assert!(entries[0]["seq"].as_u64() > entries[1]["seq"].as_u64());
    assert!(!audit.to_string().contains(theirs), "no trace of the other tenant's run");
    // Filters.
    let (_, filtered) = s.get(&s.key_a, "/audit?action=run_started").await;
    assert_eq!(filtered["logs"][0]["entries"].as_array().unwrap().len(), 1);
    let (_, filtered) = s.get(&s.key_a, &format!("/audit?run_id={theirs}")).await;
    assert_eq!(filtered["logs"][0]["entries"], json!([]));
    let (_, other) = s.get(&s.key_b, "/audit").await;
    let other_entries = other["logs"][0]["entries"].as_array().unwrap();
    assert_eq!(other_entries.len(), 2);
    assert!(other_entries.iter().all(|e| e["run_id"] == theirs));
    // The whole chain holds both tenants' entries.
    assert_eq!(d.audit.len(), 4);
    let (status, _) = s.get(&s.key_a, "/audit?limit=x").await;
    assert_eq!(status, 400);
}

async fn append(log: &FileAuditLog, tenant_user: &str, run: &str, action: AuditAction) {
    let scope = Scope { run_id: Arc::from(run), session_id: Arc::from("s1"), user_id: Some(Arc::from(tenant_user)) };
    log.append(AuditRecord { scope, action, payload: json!({"n": 1}) }).await.unwrap();
}

#[tokio::test]
async fn a_tampered_audit_file_shows_as_broken_and_only_the_tenants_problems_in_detail() {
    let dir = std::env::temp_dir().join(format!("loom-dash-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let secret = "file-audit-secret";
    {
        let log = FileAuditLog::open(&path, secret).unwrap();
        append(&log, "acme/alice", "run_a1", AuditAction::RunStarted).await;
        append(&log, "globex/bob", "run_g1", AuditAction::RunStarted).await;
        append(&log, "acme/alice", "run_a1", AuditAction::RunFinished).await;
        append(&log, "globex/bob", "run_g1", AuditAction::RunFinished).await;
    }
    let d = dash::start_with_audit(loom_server::AuditSource::file(&path, secret)).await;
    let s = &d.server;
    let file_log =
        |audit: &Value| audit["logs"].as_array().unwrap().iter().find(|l| l["name"] == "audit.jsonl").cloned();
    let (_, audit) = s.get(&s.key_a, "/audit").await;
    let log = file_log(&audit).expect("the file log is listed by its file name only");
    assert_eq!(log["verification"]["intact"], true, "{log}");
    assert_eq!(log["verification"]["head_checked"], true);
    assert_eq!(log["entries"].as_array().unwrap().len(), 2);
    assert!(!audit.to_string().contains(dir.to_str().unwrap()), "no server path");
    // Edit acme's second entry (seq 3) and globex's first (seq 2) in place.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 1 || i == 2 { l.replace("{\"n\":1}", "{\"n\":2}") } else { l.to_string() })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (_, audit) = s.get(&s.key_a, "/audit").await;
    let v = &file_log(&audit).unwrap()["verification"];
    assert_eq!(v["intact"], false, "{v}");
    let problems = v["problems"].as_array().unwrap();
    assert!(!problems.is_empty() && problems.iter().all(|p| p["seq"] == 3), "only acme's entry in detail: {v}");
    assert_eq!(problems[0]["kind"], "edited");
    assert!(v["problems_elsewhere"].as_u64().unwrap() >= 1, "{v}");
    let (_, audit) = s.get(&s.key_b, "/audit").await;
    let v = &file_log(&audit).unwrap()["verification"];
    assert_eq!(v["intact"], false);
    assert!(v["problems"].as_array().unwrap().iter().all(|p| p["seq"] == 2), "{v}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_configured_audit_file_is_read_and_verified_by_a_server_from_config() {
    let dir = std::env::temp_dir().join(format!("loom-dash-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (db, audit) = (dir.join("loom.db"), dir.join("audit.jsonl"));
    // The signing key comes from an environment variable; PATH is one every test process has.
    let toml = format!(
        "model = \"echo\"\njournal = \"sqlite:{}\"\naudit_log = {{ path = \"{}\", secret_env = \"PATH\" }}\n",
        db.display(),
        audit.display()
    );
    let config = loom_agent::config::AgentConfig::from_toml_str(&toml).unwrap();
    let server = loom_server::Server::from_config(&config, &Default::default()).await.unwrap();
    let keys = loom_server::key_store(&config).await.unwrap();
    let (_, key) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
    let http = reqwest::Client::new();
    let run: Value = http
        .post(format!("{base}/runs"))
        .bearer_auth(&key)
        .json(&json!({"input": "hi", "user_id": "ann", "wait": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["state"], "completed", "{run}");
    let audit_page: Value =
        http.get(format!("{base}/audit")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(audit_page["configured"], true, "{audit_page}");
    let log = &audit_page["logs"][0];
    assert_eq!(log["name"], "audit.jsonl");
    assert_eq!(log["verification"]["intact"], true, "{log}");
    assert_eq!(log["verification"]["head_checked"], true);
    let actions: Vec<&str> = log["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["run_finished", "run_started"]);
    assert_eq!(log["entries"][0]["user_id"], "ann");
    std::fs::remove_dir_all(&dir).ok();
}
