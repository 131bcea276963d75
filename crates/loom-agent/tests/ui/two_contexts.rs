use loom_agent::prelude::*;

/// Where am I?
#[tool]
fn whoami(ctx: ToolContext, again: ToolContext) -> String {
    format!("{} {}", ctx.run_id(), again.run_id())
}

fn main() {}
