//! The client-facing protocol: OpenAI Chat Completions and Embeddings, as clients send them
//! (`request`) and as the gateway answers (`response`, `stream`); `scan` reads facts out of
//! OpenAI JSON that is forwarded unchanged.

pub mod request;
pub mod response;
pub mod scan;
pub mod stream;

pub use request::{ChatRequest, RequestBody};
pub use response::{FinishReason, Usage};
pub use stream::ChunkWriter;
