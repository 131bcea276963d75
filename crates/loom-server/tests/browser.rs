//! The dashboard in headless Chromium (Debian's `chromium` and `chromium-driver`): a wrong key is
//! refused; with a good key, a run started through the API appears in the list live, its events
//! stream in, Allow on its pending approval continues it to completion; the usage and audit pages
//! show it. Screenshots go to `$CARGO_TARGET_DIR/ui-screenshots/`. Skips, saying so, when Chromium
//! or chromedriver is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dash;
mod support;

use std::time::Duration;

use dash::webdriver::{Browser, binaries, screenshot_dir};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn browser(width: u32, height: u32) -> Option<Browser> {
    let Some((driver, chromium)) = binaries() else {
        println!("skipped: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
        return None;
    };
    Some(Browser::start(&driver, &chromium, width, height).await.expect("chromedriver and headless chromium start"))
}

async fn sign_in(b: &Browser, base: &str, key: &str) {
    b.goto(&format!("{base}/ui/")).await.unwrap();
    let input = b.wait_for("#key-input", WAIT).await.unwrap();
    b.type_text(&input, key).await.unwrap();
    let submit = b.wait_for("#key-form button[type=submit]", WAIT).await.unwrap();
    b.click(&submit).await.unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_a_revoked_one_goes_back_to_the_form() {
    let Some(b) = browser(1280, 860).await else { return };
    let d = dash::start().await;
    let s = &d.server;
    let shots = screenshot_dir();
    sign_in(&b, &s.base, "loom_not_a_key").await;
    let error = b.wait_for_text("#key-error", "refused", WAIT).await.unwrap();
    assert!(error.contains("refused"), "{error}");
    assert!(b.find("#nav-runs").await.is_none(), "no dashboard without a valid key");
    let stored = b.script("return sessionStorage.getItem('loom.key')", json!([])).await.unwrap();
    assert_eq!(stored, json!(null), "a refused key is not kept");
    b.screenshot(&shots.join("02-wrong-key.png")).await.unwrap();
    // A key that stops working (revoked) while the dashboard is open: the next call gets 401 and
    // the page asks for a key again.
    b.script("sessionStorage.setItem('loom.key', 'loom_revoked')", json!([])).await.unwrap();
    b.goto(&format!("{}/ui/?reload=1#/runs", s.base)).await.unwrap();
    b.wait_for_text("#key-form", "refused the key", WAIT).await.unwrap();
    assert_eq!(b.script("return sessionStorage.getItem('loom.key')", json!([])).await.unwrap(), json!(null));
    b.quit().await;
}

#[tokio::test]
async fn a_run_appears_live_streams_its_events_and_an_approval_click_completes_it() {
    let Some(b) = browser(1360, 900).await else { return };
    let d = dash::start().await;
    let s = &d.server;
    let shots = screenshot_dir();
    // Some history first, so the pages have something to show.
    s.run(&s.key_a, json!({"input": "hello, summarise the quarterly report", "user_id": "bob"})).await;
    s.run(&s.key_b, json!({"input": "another tenant's run", "user_id": "eve"})).await;

    b.goto(&format!("{}/ui/", s.base)).await.unwrap();
    b.wait_for("#key-input", WAIT).await.unwrap();
    b.screenshot(&shots.join("01-key-form.png")).await.unwrap();
    sign_in(&b, &s.base, &s.key_a).await;
    b.wait_for("#runs-table", WAIT).await.unwrap();
    let rows = b.wait_for_text("#runs-table", "quarterly report", WAIT).await.unwrap();
    assert!(!rows.contains("another tenant"), "the other tenant's run is not listed: {rows}");

    // A run started through the API while the list is open appears without a reload.
    let (status, run) = s.post(&s.key_a, "/runs", json!({"input": "tool: write the report", "user_id": "alice"})).await;
    assert_eq!(status, 201, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    let row = format!("tr.run-row[data-run='{id}']");
    b.wait_for(&row, WAIT).await.unwrap();
    b.wait_for(&format!("{row}[data-state='suspended']"), WAIT).await.unwrap();
    b.screenshot(&shots.join("03-runs-live.png")).await.unwrap();

    // Open it: the events stream in, the tool call waits for approval.
    let el = b.find(&row).await.unwrap();
    b.click(&el).await.unwrap();
    b.wait_for("#approvals .btn-allow", WAIT).await.unwrap();
    b.wait_for_text("#timeline", "waiting for approval", WAIT).await.unwrap();
    let timeline = b.wait_for_text("#timeline", "danger", WAIT).await.unwrap();
    assert!(timeline.contains("tool: write the report"), "{timeline}");
    assert!(timeline.contains("/tmp/report.txt"), "the arguments are shown: {timeline}");
    b.screenshot(&shots.join("04-run-needs-approval.png")).await.unwrap();

    // Allow: the run continues to completion, live.
    let allow = b.find("#approvals .btn-allow").await.unwrap();
    b.click(&allow).await.unwrap();
    let output = b.wait_for_text("#final-output", "done: ran with", WAIT).await.unwrap();
    assert!(output.contains("/tmp/report.txt"), "{output}");
    b.wait_for(".run-meta .badge[data-state='completed']", WAIT).await.unwrap();
    assert!(b.find("#approvals").await.is_none(), "nothing pending any more");
    let (_, after) = s.get(&s.key_a, &format!("/runs/{id}")).await;
    assert_eq!(after["state"], "completed", "{after}");
    assert!(after["output"].as_str().unwrap().starts_with("done: ran with"));
    let timeline = b.wait_for_text("#timeline", "ok", WAIT).await.unwrap();
    assert!(timeline.contains("ran with"), "the tool's result is shown: {timeline}");
    b.screenshot(&shots.join("05-run-completed.png")).await.unwrap();

    // Every event, once, in order, up to run.completed.
    let tab = b.find("#tab-events").await.unwrap();
    b.click(&tab).await.unwrap();
    b.wait_for("#events", WAIT).await.unwrap();
    let shown = b
        .script("return Array.from(document.querySelectorAll('#events .event')).map(e => e.dataset.type)", json!([]))
        .await
        .unwrap();
    let (_, page) = s.get(&s.key_a, &format!("/runs/{id}/events?limit=1000")).await;
    let want: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(shown, json!(want), "the page shows the run's events as the API has them");
    assert!(want.contains(&"run.suspended") && want.last() == Some(&"run.completed"), "{want:?}");
    b.screenshot(&shots.join("06-run-events.png")).await.unwrap();

    // The saved conversation.
    let tab = b.find("#tab-messages").await.unwrap();
    b.click(&tab).await.unwrap();
    b.wait_for_text(".messages", "ran with", WAIT).await.unwrap();

    // Approvals, usage, audit.
    b.goto(&format!("{}/ui/#/approvals", s.base)).await.unwrap();
    b.wait_for_text(".empty", "Nothing waits for you", WAIT).await.unwrap();
    b.goto(&format!("{}/ui/#/usage", s.base)).await.unwrap();
    b.wait_for_text("#usage-runs", "2", WAIT).await.unwrap();
    let table = b.wait_for_text("#usage-table", "alice", WAIT).await.unwrap();
    assert!(table.contains("bob") && !table.contains("eve"), "{table}");
    b.screenshot(&shots.join("07-usage.png")).await.unwrap();
    b.goto(&format!("{}/ui/#/audit", s.base)).await.unwrap();
    b.wait_for_text(".verify-ok", "Chain verified", WAIT).await.unwrap();
    b.wait_for_text(".audit-table", "tool_call", WAIT).await.unwrap();
    b.screenshot(&shots.join("08-audit.png")).await.unwrap();
    b.goto(&format!("{}/ui/#/sessions", s.base)).await.unwrap();
    b.wait_for_text(".table", "alice", WAIT).await.unwrap();
    b.screenshot(&shots.join("09-sessions.png")).await.unwrap();

    // Dark mode follows the system's preference.
    b.cdp("Emulation.setEmulatedMedia", json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}))
        .await
        .unwrap();
    b.goto(&format!("{}/ui/#/run/{id}", s.base)).await.unwrap();
    b.wait_for_text("#timeline", "ran with", WAIT).await.unwrap();
    let background = b.script("return getComputedStyle(document.body).backgroundColor", json!([])).await.unwrap();
    assert_eq!(background, json!("rgb(14, 16, 22)"), "the dark palette applies");
    b.screenshot(&shots.join("11-dark-run.png")).await.unwrap();
    b.cdp("Emulation.setEmulatedMedia", json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]}))
        .await
        .unwrap();

    // Narrow screens: the sidebar folds into a menu.
    b.resize(390, 844).await.unwrap();
    b.goto(&format!("{}/ui/#/run/{id}", s.base)).await.unwrap();
    b.wait_for_text("#timeline", "ran with", WAIT).await.unwrap();
    b.screenshot(&shots.join("10-mobile-run.png")).await.unwrap();
    // No script error, CSP violation or failed request on any page (but the 401 of the probe for a
    // server without authentication).
    // A probe error of our own first shows that the console is really read.
    b.script("console.error('loom-console-probe')", json!([])).await.unwrap();
    let errors = b.console_errors(&[401]).await.unwrap();
    assert!(errors.iter().any(|e| e.contains("loom-console-probe")), "the console log is read: {errors:#?}");
    let errors: Vec<&String> = errors.iter().filter(|e| !e.contains("loom-console-probe")).collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    b.quit().await;
}

#[tokio::test]
async fn a_server_without_authentication_opens_without_a_key() {
    let Some(b) = browser(1280, 860).await else { return };
    let d = dash::start_without_auth().await;
    let s = &d.server;
    s.run("", json!({"input": "hello without a key", "user_id": "dev"})).await;
    b.goto(&format!("{}/ui/", s.base)).await.unwrap();
    b.wait_for_text("#runs-table", "hello without a key", WAIT).await.unwrap();
    b.wait_for_text(".sidebar-foot", "without authentication", WAIT).await.unwrap();
    assert!(b.find("#key-form").await.is_none());
    b.quit().await;
}

#[tokio::test]
async fn deny_with_a_reason_and_edit_the_arguments_from_the_page() {
    let Some(b) = browser(1360, 900).await else { return };
    let d = dash::start().await;
    let s = &d.server;
    let edited = s.run(&s.key_a, json!({"input": "tool: edit me", "user_id": "alice"})).await;
    let denied = s.run(&s.key_a, json!({"input": "tool: deny me", "user_id": "alice"})).await;
    let (edited, denied) = (edited["run_id"].as_str().unwrap(), denied["run_id"].as_str().unwrap());
    sign_in(&b, &s.base, &s.key_a).await;
    b.wait_for("#runs-table", WAIT).await.unwrap();

    // Edit: other arguments, as JSON.
    b.goto(&format!("{}/ui/#/run/{edited}", s.base)).await.unwrap();
    let edit = b.wait_for("#approvals button[id^='edit-']", WAIT).await.unwrap();
    b.click(&edit).await.unwrap();
    let area = b.wait_for("#approvals textarea", WAIT).await.unwrap();
    b.clear(&area).await.unwrap();
    b.type_text(&area, "{\"x\": 7}").await.unwrap();
    b.screenshot(&screenshot_dir().join("12-edit-arguments.png")).await.unwrap();
    let run_it = b.find("#approvals .btn-allow").await.unwrap();
    b.click(&run_it).await.unwrap();
    b.wait_for_text("#final-output", "done: ran with {\"x\":7}", WAIT).await.unwrap();
    let (_, run) = s.get(&s.key_a, &format!("/runs/{edited}")).await;
    assert_eq!(run["output"], "done: ran with {\"x\":7}", "{run}");

    // Deny, with a reason the model reads.
    b.goto(&format!("{}/ui/#/run/{denied}", s.base)).await.unwrap();
    let reason = b.wait_for("#approvals input", WAIT).await.unwrap();
    b.type_text(&reason, "not on a Sunday").await.unwrap();
    let deny = b.find("#approvals .btn-deny").await.unwrap();
    b.click(&deny).await.unwrap();
    let timeline = b.wait_for_text("#timeline", "not on a Sunday", WAIT).await.unwrap();
    assert!(timeline.contains("denied"), "the call shows as denied: {timeline}");
    b.wait_for(".run-meta .badge[data-state='completed']", WAIT).await.unwrap();
    let (_, run) = s.get(&s.key_a, &format!("/runs/{denied}")).await;
    assert!(run["output"].as_str().unwrap().contains("not on a Sunday"), "the model read the reason: {run}");
    b.screenshot(&screenshot_dir().join("13-denied.png")).await.unwrap();

    // The session's history, from the sessions page.
    b.goto(&format!("{}/ui/#/sessions", s.base)).await.unwrap();
    let row = b.wait_for(".table tr.clickable", WAIT).await.unwrap();
    b.click(&row).await.unwrap();
    b.wait_for_text(".history", "tool:", WAIT).await.unwrap();
    b.screenshot(&screenshot_dir().join("14-session-history.png")).await.unwrap();
    b.quit().await;
}
