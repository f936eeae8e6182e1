//! The client-facing protocol: OpenAI Chat Completions and Embeddings, as clients send them
//! (`request`) and as the gateway answers (`response`, `stream`).

pub mod request;
pub mod response;
pub mod stream;

pub use request::{ChatRequest, RequestBody};
pub use response::{FinishReason, Usage};
pub use stream::ChunkWriter;
