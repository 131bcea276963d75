//! The runtime: the one layer that owns every side effect of a run.
//!
//! [`RunCx`] is the run's working state and its pipeline: `begin` (or `resume`) seeds and starts
//! the run, [`RunCx::model_turn`] and [`RunCx::run_tools`] are the two steps an architecture
//! drives, and `finish` ends it. Each step consults the agent's policies (`env.rs`: budget, hooks,
//! rate limit, permissions, approval, guardrails, audit) in a fixed order, writes the journal before
//! moving on (`replay.rs`: the same recorder replays a resumed run's journal), and appends events to
//! the run's log (`log.rs`).
//!
//! | file | what it owns |
//! |---|---|
//! | `env.rs` | what every run consults: model, tools, stores, limits, the policies as one value |
//! | `log.rs` | the run's event log, state and counters; its sealed result and transcript |
//! | `context.rs` | `RunCx`: the model turn, budget, rate limit, guardrail and audit helpers |
//! | `calls.rs` | what other architectures need: shaped model calls, their own tool calls, artifacts |
//! | `child.rs` | child runs: the link to the parent (budget, usage, cancellation), nested events |
//! | `live.rs` | a live agent's tools and hooks, copy-on-write |
//! | `begin.rs` / `finish.rs` | a run's first and last steps |
//! | `stream.rs` | one live model call, streamed |
//! | `output_filter.rs` | streaming redaction by the output guardrails |
//! | `tools.rs` | tool batching and execution |
//! | `approval.rs` | the permission and approval state machine |
//! | `replay.rs` | the journal, both ways: record, and replay on resume |
//! | `criteria.rs` | the criteria judge: a structured verdict per criterion, journaled per round |
//! | `window/` | context management: token counts, shortening, summaries, the model's view |
//! | `steps.rs` | durable steps of an architecture's own (journal boundaries), handoff detection |
//! | `side_call.rs` | model calls that are not turns (the judge, the summarizer) |

mod approval;
mod begin;
mod calls;
pub(crate) mod child;
mod context;
mod criteria;
pub(crate) mod env;
mod finish;
pub(crate) mod live;
pub(crate) mod log;
mod output_filter;
pub(crate) mod replay;
mod side_call;
mod steps;
mod stream;
mod tools;
pub(crate) mod window;

pub(crate) use begin::RunPlan;
pub use calls::{ModelCall, ToolCallResult};
pub(crate) use child::{ChildSpec, ParentLink};
pub use child::{NestedEvent, NestedEvents};
pub use context::RunCx;
pub(crate) use env::{Guardrails, HookSet, Limits, Policies, RunEnv, Stores};
pub(crate) use finish::Outcome;
pub(crate) use live::Live;
pub(crate) use log::{RunEnd, RunLog};
pub(crate) use steps::{HANDOFF_ANSWER, HANDOFF_PREFIX};
pub use window::ContextMeter;
pub(crate) use window::ContextSettings;
