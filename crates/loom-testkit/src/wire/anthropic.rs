//! Anthropic Messages bodies and stream pieces.
