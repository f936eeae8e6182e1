//! Anthropic's Messages API as a client format (`/v1/messages`), so Claude Code and the
//! Anthropic SDKs work through the gateway:
//!
//! ```text
//!  client body ─► request::translate (validates as Anthropic does; builds the chat body)
//!   ├─ Anthropic-family deployment: the client's own body goes upstream (providers'
//!   │  `messages_request`), the answer comes back unchanged; usage read on the way
//!   │  (`usage_of`, `stream::PassThrough`)
//!   └─ any other: the chat body through the normal exchange; the answer translated back
//!      (`response::from_openai`, `stream::ToMessages` over the provider's stream events)
//! ```
//! Errors, gateway-made or upstream, take Anthropic's shape ([`error`]).

pub mod count;
pub mod error;
pub mod request;
pub mod response;
pub mod stream;

pub use request::{translate, translate_for, Documents};
pub use response::{from_openai, usage_of};
pub use stream::{PassThrough, ToMessages};
