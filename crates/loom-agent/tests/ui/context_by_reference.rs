use loom_agent::prelude::*;

/// Where am I?
#[tool]
fn whoami(ctx: &ToolContext) -> String {
    ctx.run_id().to_string()
}

fn main() {}
