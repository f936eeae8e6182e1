//! Client APIs other than OpenAI Chat Completions, mapped onto the chat pipeline (same auth,
//! routing, retries, fallbacks, spend) and passed through where a deployment speaks them
//! natively. Each format is pure translation here; `gateway` does the I/O.
//! - [`messages`]: Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`).

pub mod messages;
