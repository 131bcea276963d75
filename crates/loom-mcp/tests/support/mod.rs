//! The real MCP servers the tests talk to: the reference server `@modelcontextprotocol/server-everything`
//! from npm (installed once into `$LOOM_MCP_CACHE`, default `~/.cache/loom-mcp`), and a small
//! scripted server written here on the same npm SDK.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

pub const PACKAGE: &str = "@modelcontextprotocol/server-everything@2026.8.31";

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("LOOM_MCP_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/loom-mcp"),
    }
}

/// The reference server's `dist/index.js`, installing it with npm when missing; `None` (and a
/// "skipped" line) only when npm or node is not installed.
pub fn reference_server() -> Option<PathBuf> {
    let dir = cache_dir();
    let entry = dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !have("node") || !have("npm") {
        eprintln!("skipped: npm not found");
        return None;
    }
    if !entry.exists() {
        // Test binaries run in parallel: one installs (holding a lock file), the others wait.
        std::fs::create_dir_all(&dir).expect("create the MCP cache dir");
        let lock = dir.join(".installing");
        let stale = |l: &std::path::Path| {
            std::fs::metadata(l)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default().as_secs() > 300)
        };
        if stale(&lock) {
            let _ = std::fs::remove_file(&lock);
        }
        match std::fs::File::create_new(&lock) {
            Ok(_) => {
                let status = Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&dir)
                    .arg(PACKAGE)
                    .status();
                let _ = std::fs::remove_file(&lock);
                assert!(status.is_ok_and(|s| s.success()), "npm install {PACKAGE} failed");
            }
            Err(_) => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
                while !entry.exists() && lock.exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }
    assert!(entry.exists(), "{} missing after npm install", entry.display());
    Some(entry)
}

/// A scripted MCP server (on the SDK the reference server installed): `add_tool` registers a tool
/// `late` (so the server sends `notifications/tools/list_changed`), `slow` waits 30 s and writes
/// `cancelled request N` to stderr when the client cancels it, `fails` answers `isError: true`,
/// `plain` has no annotations.
pub fn scripted_server(dir: &std::path::Path) -> Option<PathBuf> {
    let entry = reference_server()?;
    let sdk = cache_dir().join("node_modules/@modelcontextprotocol/sdk/dist/esm/server");
    let script = format!(
        r#"
import {{ McpServer }} from "{mcp}";
import {{ StdioServerTransport }} from "{stdio}";
const server = new McpServer({{ name: "scripted", version: "1.0.0" }}, {{ capabilities: {{ tools: {{ listChanged: true }} }} }});
server.registerTool("add_tool", {{ description: "Adds the tool `late`.", annotations: {{ readOnlyHint: false, destructiveHint: false }} }}, async () => {{
  server.registerTool("late", {{ description: "A tool added later.", annotations: {{ readOnlyHint: true }} }},
    async () => ({{ content: [{{ type: "text", text: "late tool ran" }}] }}));
  return {{ content: [{{ type: "text", text: "added" }}] }};
}});
server.registerTool("slow", {{ description: "Waits 30 s unless cancelled.", annotations: {{ readOnlyHint: true }} }}, async (extra) => {{
  await new Promise((resolve) => {{
    const t = setTimeout(resolve, 30000);
    extra.signal.addEventListener("abort", () => {{ clearTimeout(t); console.error("cancelled request " + extra.requestId); resolve(); }});
  }});
  return {{ content: [{{ type: "text", text: "slow done" }}] }};
}});
server.registerTool("fails", {{ description: "Always fails.", annotations: {{ readOnlyHint: true }} }},
  async () => ({{ content: [{{ type: "text", text: "it broke: disk on fire" }}], isError: true }}));
server.registerTool("plain", {{ description: "No annotations." }}, async () => ({{ content: [{{ type: "text", text: "plain" }}] }}));
console.error("scripted server ready");
await server.connect(new StdioServerTransport());
"#,
        mcp = sdk.join("mcp.js").display(),
        stdio = sdk.join("stdio.js").display(),
    );
    let _ = entry;
    let path = dir.join("scripted.mjs");
    std::fs::write(&path, script).expect("write the scripted server");
    Some(path)
}
