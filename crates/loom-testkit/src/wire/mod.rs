//! Bodies in each provider's wire format, written from the providers' published API references.

/// Frames one server-sent event: an optional `event:` line, a `data:` line, a blank line.
pub fn sse_event(event: Option<&str>, data: &str) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod responses;
