//! Runnable examples for `loom-agent`, one per API snippet. Each runs offline (a scripted model,
//! or the local model for `quickstart`) with `cargo run -p loom-examples --example NAME`:
//!
//! | example | shows |
//! |---|---|
//! | `quickstart` | an agent with instructions and one `#[tool]`, on the local model |
//! | `agent_run` | `agent.run`: a one-off request that waits for the final answer |
//! | `agent_stream` | `agent.stream`: the run's events, live |
//! | `session` | sessions: `session.start`, `run.wait()`, a conversation over several runs |
//! | `session_config` | `SessionConfig`: an id, metadata and extension fields |
//! | `run_context` | `RunContext`: run-scoped inputs, knowledge and extension fields |
//! | `runtime_task` | `RuntimeTask`: a goal, structured input and acceptance criteria |
//! | `long_running` | `Runtime::long_running`: criteria judged after each answer, failed ones sent back |
//! | `tool_decorator` | `#[tool]`: a plain function as a tool, with a description and flags |
//! | `structured_output` | `agent.run_typed::<T>()`: a validated, typed answer |
//! | `run_events` | a run's events read by two consumers, its artifacts and transcript |
//! | `cancel` | cancelling a run while the model is still thinking |
//! | `full_example` | the seed's complete example: generation settings, a tool, `capability::files(".").read_only()`, a runtime profile, a named session |
//! | `mcp` | an MCP server over stdio (the npm reference server, skipped when not installed): `connect()`, `current_tools()`, a tool call, resources |
//! | `shell_approval` | `capability::shell(dir)` with an `ApprovalHandler` that allows `echo` and denies `rm` |
//! | `custom_capability` | a capability of one's own through the `Capability` trait: two tools sharing state, and instructions |
//! | `plan_execute` | the `plan_execute` architecture: a plan with dependencies as events and an artifact, steps run with tools |
//! | `self_refine` | the `self_refine` and `reflexion` architectures: answers critiqued (structured) and revised |
//! | `rewoo` | the `rewoo` architecture: every tool call planned with `#E1` placeholders, run without the model, one answer |
//! | `tree_of_thoughts` | the `tree_of_thoughts` architecture: expansion, scoring and pruning of lines of reasoning |
