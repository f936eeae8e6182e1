//! Switchboard: an OpenAI-compatible LLM gateway on Pingora that takes a LiteLLM proxy config.
//!
//! Layout (request path, top to bottom):
//! - [`config`]: the LiteLLM `config.yaml` read into a validated, typed [`config::Config`].
//! - [`router`]: the immutable routing [`router::Snapshot`] built from a config (groups,
//!   deployments, live per-deployment state), swapped whole on reload.
//! - [`gateway`]: the Pingora service; routes, auth and the upstream exchange loop.
//! - [`providers`]: one module per upstream API behind the [`providers::Provider`] trait.
//! - [`ingress`]: client APIs besides OpenAI chat: the Responses and legacy Completions APIs
//!   translated onto chat, Anthropic `/v1/messages` translated or passed through to deployments
//!   that speak it.
//! - [`openai`]: the client-facing OpenAI protocol types; [`codec`]: stream framings;
//!   [`events`]: provider-neutral stream events and the sinks that write a client's format.
//! - [`upstream`]: endpoints and the pooled upstream client over Pingora's connector.
//! - [`edge`]: bounds on client connections (count, request head, stalled writes);
//!   [`listeners`]: the listening endpoints (TCP, Unix, TLS, h2c); [`tls`]: listener
//!   certificates (checked, swapped on reload) and mTLS.
//!   [`proxy_protocol`]: PROXY v1/v2 headers from trusted load balancers; [`client_addr`]: the
//!   real client address (trusted proxies, forwarding headers) and `allowed_ips`.
//! - [`cache`]: the response cache stage (canonical keys, local LRU, SSE replay of hits).
//! - [`cost`]: what a call cost, from its usage and LiteLLM's vendored price table.
//! - Tenancy: [`keys`] (virtual keys served from memory, their authenticate stage and the
//!   spend write-behind), [`store`] (the SQLite/Postgres database in LiteLLM's schema),
//!   [`tenant`] (a key as a request carries it); admin routes in `gateway::admin`;
//!   [`budgets`] (reserve-at-admission budgets, their windows and Prometheus series).
//! - [`shared_state`]: the Redis client for state shared by gateway instances; [`limits`]: rate
//!   limits on keys (rpm, tpm, parallel), local or over Redis.
//! - [`error`]: OpenAI-shaped errors; [`logging`]: access and diagnostic logs; [`redact`]:
//!   configured secrets kept out of upstream error text.
//! - [`alerting`]: Slack and webhook alerts (exceptions, slow answers, cooldowns, outages,
//!   budgets), sent off the request path.
//! - [`health`]: LiteLLM's `/health` model checks, in the background feeding routing.
//! - Operations: [`reload`] (SIGHUP hot reload), [`metrics`] (Prometheus), [`lifecycle`]
//!   (signals, drain), [`systemd`] (sd_notify).

pub mod alerting;
pub mod app;
pub mod auth;
pub mod budgets;
pub mod cache;
pub mod civil_time;
pub mod client_addr;
pub mod codec;
pub mod config;
pub mod context;
pub mod cost;
pub mod edge;
pub mod error;
pub mod events;
pub mod gateway;
pub mod health;
pub mod ingress;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod openai;
pub mod pipeline;
pub mod providers;
pub mod proxy_protocol;
pub mod redact;
pub mod reload;
pub mod router;
pub mod server;
pub mod shared_state;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod tenant;
pub mod tenants;
pub mod tls;
pub mod upstream;
