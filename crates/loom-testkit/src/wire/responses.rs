//! OpenAI Responses API bodies and stream pieces.
