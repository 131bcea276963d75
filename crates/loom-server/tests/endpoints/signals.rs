//! `POST/GET /sessions/{id}/signals` and `/schedules`.

use std::time::Duration;

use loom_agent::SessionConfig;
use serde_json::json;

use crate::start;

#[tokio::test]
async fn a_signal_starts_a_run_or_is_stored_and_duplicates_are_dropped() {
    let s = start().await;
    let a = &s.key_a;
    // Normal urgency: the default policy runs it.
    let (status, r) = s
        .post(
            a,
            "/sessions/ops/signals",
            json!({"text": "build 812 is red", "source": "ci", "type": "build.failed",
            "dedupe_key": "build-812", "user_id": "u", "payload": {"build": 812}}),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["outcome"], "run_started");
    assert_eq!(r["attention"], "run");
    assert_eq!(r["duplicate"], false);
    let run_id = r["run_id"].as_str().unwrap().to_string();
    assert_eq!(r["run"]["run_id"], run_id.as_str());
    let run = s.wait_for(a, &run_id, "completed").await;
    assert_eq!(run["output"], "Echo: [signal from ci, build.failed, normal] build 812 is red");
    assert_eq!(run["user_id"], "u");
    assert_eq!(run["session_id"], "ops");

    // The same dedupe key: a duplicate, nothing runs.
    let (status, d) =
        s.post(a, "/sessions/ops/signals", json!({"text": "build 812 is red again", "dedupe_key": "build-812"})).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        (d["outcome"].as_str(), d["duplicate"].as_bool(), &d["run_id"]),
        (Some("duplicate"), Some(true), &json!(null))
    );

    // Low urgency: observed (stored for the next run), no run.
    let (status, o) = s.post(a, "/sessions/ops/signals", json!({"text": "fyi: deploy at 5", "urgency": "low"})).await;
    assert_eq!(status, 202, "{o}");
    assert_eq!((o["outcome"].as_str(), o["attention"].as_str()), (Some("stored"), Some("observe")));
    assert_eq!(o["run_id"], json!(null));

    // The list: both stored signals, with their status; the duplicate is not there.
    let (status, list) = s.get(a, "/sessions/ops/signals").await;
    assert_eq!(status, 200, "{list}");
    let signals = list["signals"].as_array().unwrap();
    assert_eq!(signals.len(), 2, "{list}");
    assert_eq!(signals[0]["status"], "handled");
    assert_eq!(signals[0]["run_id"], run_id.as_str());
    assert_eq!(signals[0]["payload"], json!({"build": 812}));
    assert_eq!(signals[0]["user_id"], "u");
    assert_eq!(signals[1]["status"], "observed");
    let (_, pending) = s.get(a, "/sessions/ops/signals?status=pending").await;
    assert_eq!(pending["signals"].as_array().unwrap().len(), 1);
    assert_eq!(pending["signals"][0]["text"], "fyi: deploy at 5");
    let (_, processed) = s.get(a, "/sessions/ops/signals?status=processed").await;
    assert_eq!(processed["signals"].as_array().unwrap().len(), 1);
    let (status, bad) = s.get(a, "/sessions/ops/signals?status=nope").await;
    assert_eq!(status, 400, "{bad}");
}

#[tokio::test]
async fn a_critical_signal_interrupts_the_run_in_flight() {
    let s = start().await;
    let a = &s.key_a;
    let (status, slow) = s.post(a, "/runs", json!({"input": "slow work", "session_id": "desk"})).await;
    assert_eq!(status, 201, "{slow}");
    let slow_id = slow["run_id"].as_str().unwrap().to_string();
    s.wait_for(a, &slow_id, "running").await;
    let (status, r) = s.post(a, "/sessions/desk/signals", json!({"text": "prod is down", "urgency": "critical"})).await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["attention"], "interrupt");
    assert_eq!(r["interrupted"], json!([slow_id]));
    s.wait_for(a, &slow_id, "cancelled").await;
    let new_id = r["run_id"].as_str().unwrap();
    let run = s.wait_for(a, new_id, "completed").await;
    assert_eq!(run["output"], "Echo: [signal from api, message, critical] prod is down");
}

#[tokio::test]
async fn signals_are_per_tenant_and_bodies_are_checked() {
    let s = start().await;
    let (a, b) = (&s.key_a, &s.key_b);
    let (status, _) =
        s.post(a, "/sessions/room/signals", json!({"text": "acme secret signal", "urgency": "low"})).await;
    assert_eq!(status, 202);
    // B does not see A's session or its signals.
    let (status, body) = s.get(b, "/sessions/room/signals").await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("acme secret"));
    // B's signal to the same id goes to B's own session; A's list is unchanged.
    let (status, r) = s.post(b, "/sessions/room/signals", json!({"text": "globex note", "urgency": "low"})).await;
    assert_eq!(status, 202, "{r}");
    let (_, mine) = s.get(b, "/sessions/room/signals").await;
    assert_eq!(mine["signals"].as_array().unwrap().len(), 1);
    assert_eq!(mine["signals"][0]["text"], "globex note");
    let (_, theirs) = s.get(a, "/sessions/room/signals").await;
    assert_eq!(theirs["signals"].as_array().unwrap().len(), 1);
    assert_eq!(theirs["signals"][0]["text"], "acme secret signal");
    // The same dedupe key in two tenants is two signals.
    let (_, x) = s.post(a, "/sessions/room/signals", json!({"text": "k", "dedupe_key": "k1", "urgency": "low"})).await;
    let (_, y) = s.post(b, "/sessions/room/signals", json!({"text": "k", "dedupe_key": "k1", "urgency": "low"})).await;
    assert_eq!((x["duplicate"].as_bool(), y["duplicate"].as_bool()), (Some(false), Some(false)));

    // A tool.result signal cannot reach another tenant's run.
    let (status, run) = s.post(a, "/runs", json!({"input": "acme run", "session_id": "room", "wait": true})).await;
    assert_eq!(status, 200, "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let forged = json!({"text": "result", "type": "tool.result",
        "payload": {"run_id": run_id, "call_id": "c1", "output": "forged"}});
    let (status, e) = s.post(b, "/sessions/room/signals", forged).await;
    assert_eq!(status, 404, "{e}");
    let (_, still) = s.get(a, &format!("/runs/{run_id}")).await;
    assert_eq!(still["output"], "Echo: acme run");

    // Malformed JSON 400, unknown fields / wrong types 422, empty text 400, another user 409.
    let (status, e) = s.raw("post", a, "/sessions/room/signals", "{\"text\": ").await;
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("malformed_json")));
    let (status, e) = s.post(a, "/sessions/room/signals", json!({"text": "x", "colour": "red"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (422, Some("invalid_body")), "{e}");
    let (status, _) = s.post(a, "/sessions/room/signals", json!({"text": "x", "urgency": "extreme"})).await;
    assert_eq!(status, 422);
    let (status, _) = s.post(a, "/sessions/room/signals", json!({"source": "ci"})).await;
    assert_eq!(status, 422);
    let (status, _) = s.post(a, "/sessions/room/signals", json!({"text": "  "})).await;
    assert_eq!(status, 400);
    let (status, _) = s.post(a, "/sessions/room/signals", json!({"text": "x", "user_id": "someone"})).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn schedules_are_created_listed_fired_and_deleted_per_tenant() {
    let s = start().await;
    let (a, b) = (&s.key_a, &s.key_b);
    let (status, cron) = s
        .post(
            a,
            "/schedules",
            json!({"session_id": "daily", "user_id": "u", "input": "standup summary",
            "cron": "0 9 * * MON-FRI", "missed": "run_once", "urgency": "high"}),
        )
        .await;
    assert_eq!(status, 201, "{cron}");
    assert_eq!(cron["schedule"], json!({"kind": "cron", "expr": "0 9 * * MON-FRI"}));
    assert_eq!((cron["missed"].as_str(), cron["urgency"].as_str()), (Some("run_once"), Some("high")));
    assert_eq!(cron["user_id"], "u");
    assert!(cron["next_at"].as_str().unwrap().contains("T09:00:00"), "{cron}");
    let cron_id = cron["schedule_id"].as_str().unwrap().to_string();
    let (status, every) =
        s.post(a, "/schedules", json!({"session_id": "tick", "user_id": "u", "input": "ping", "every_ms": 50})).await;
    assert_eq!(status, 201, "{every}");

    // The tenant sees its schedules; another tenant sees none and cannot delete them.
    let (_, list) = s.get(a, "/schedules").await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 2);
    let (_, list) = s.get(a, "/schedules?session_id=daily").await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    let (_, list) = s.get(a, "/schedules?user_id=nobody").await;
    assert_eq!(list["schedules"], json!([]));
    let (status, list) = s.get(b, "/schedules").await;
    assert_eq!((status, &list["schedules"]), (200, &json!([])));
    let (status, body) = s.delete(b, &format!("/schedules/{cron_id}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(s.agent.schedules().await.unwrap().len(), 2, "B deleted nothing");

    // A worker fires the interval schedule into the tenant's user's session.
    tokio::time::sleep(Duration::from_millis(80)).await;
    let report = s.agent.worker().tick().await.unwrap();
    assert!(report.fired >= 1, "{report:?}");
    let session = s.agent.session(SessionConfig::new("tick").user("acme/u"));
    let fired = session.signals().await.unwrap();
    assert!(!fired.is_empty());
    assert_eq!((fired[0].signal.text.as_str(), fired[0].signal.source.as_str()), ("ping", "schedule"));

    // Deleted by its tenant: gone, and a second delete is 404.
    let (status, d) = s.delete(a, &format!("/schedules/{cron_id}")).await;
    assert_eq!((status, &d["deleted"]), (200, &json!(true)), "{d}");
    let (status, _) = s.delete(a, &format!("/schedules/{cron_id}")).await;
    assert_eq!(status, 404);
    let (_, list) = s.get(a, "/schedules").await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);

    // Bad bodies.
    let base = json!({"session_id": "x", "input": "y"});
    let mut both = base.clone();
    both["cron"] = json!("* * * * *");
    both["every_ms"] = json!(10);
    assert_eq!(s.post(a, "/schedules", both).await.0, 400);
    assert_eq!(s.post(a, "/schedules", base.clone()).await.0, 400, "no schedule");
    let mut bad_cron = base.clone();
    bad_cron["cron"] = json!("not a cron");
    let (status, e) = s.post(a, "/schedules", bad_cron).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("cron"));
    let mut zero = base.clone();
    zero["every_ms"] = json!(0);
    assert_eq!(s.post(a, "/schedules", zero).await.0, 400);
    let mut unknown = base.clone();
    unknown["every_ms"] = json!(10);
    unknown["timezone"] = json!("CET");
    assert_eq!(s.post(a, "/schedules", unknown).await.0, 422);
    assert_eq!(s.raw("post", a, "/schedules", "not json").await.0, 400);
    assert_eq!(s.get(a, "/schedules?colour=red").await.0, 400);
}
