//! One Redis round trip per admission, however many admission stages use Redis.
//!
//! A request's [`Batch`] (in its `Context`) collects the Lua scripts of the admission stages
//! that run before the one that must wait for an answer: an early stage [`Batch::push`]es its
//! script and goes on without waiting; the next stage that needs Redis calls
//! [`Batch::eval_with`], which sends everything pending and its own script as one pipeline
//! (one round trip), and leaves the early stages' replies in the batch for them to
//! [`Batch::take`] in a later step (or sends them by themselves with [`Batch::flush`] when no
//! stage did). Today: the budget stage pushes its reservation script before the rate-limit
//! stage runs, and reads its answer after (see `budgets::stage`).

use super::{CallError, SharedState};
use redis::{Script, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// Admission round trips to Redis since start (`/metrics`).
static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

/// Admission round trips to Redis since start (one pipeline counts once).
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(Ordering::Relaxed)
}

/// A script call: the script, its keys and its arguments.
pub struct Call {
    pub script: &'static Script,
    pub keys: Vec<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
}

/// A pushed call's place in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(usize);

/// The scripts one request's admission stages send to Redis (see the module doc). Empty (no
/// allocation) unless a stage pushes.
#[derive(Default)]
pub struct Batch {
    pending: Vec<(Ticket, Call)>,
    replies: Vec<(Ticket, Result<Value, CallError>)>,
    issued: usize,
}

impl Batch {
    /// Queues `call` for the next round trip; its reply is [`Batch::take`]n after.
    pub fn push(&mut self, call: Call) -> Ticket {
        let t = Ticket(self.issued);
        self.issued += 1;
        self.pending.push((t, call));
        t
    }

    /// Whether calls wait to be sent.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends the pending calls and `call` in one round trip; `call`'s reply. The pending
    /// calls' replies (or the failure) wait in the batch.
    pub async fn eval_with(&mut self, state: &SharedState, call: Call) -> Result<Value, CallError> {
        let t = self.push(call);
        self.flush(state).await;
        self.take(t).unwrap_or(Err(CallError::Unavailable))
    }

    /// Sends the pending calls (if any) in one round trip.
    pub async fn flush(&mut self, state: &SharedState) {
        if self.pending.is_empty() {
            return;
        }
        ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
        let calls: Vec<&Call> = self.pending.iter().map(|(_, c)| c).collect();
        match state.eval_many(&calls).await {
            Ok(values) => {
                for ((t, _), v) in self.pending.drain(..).zip(values) {
                    let reply = match v {
                        Value::ServerError(e) => Err(CallError::Redis(e.into())),
                        v => Ok(v),
                    };
                    self.replies.push((t, reply));
                }
            }
            Err(e) => {
                let message = e.to_string();
                let mut first = Some(e);
                for (t, _) in self.pending.drain(..) {
                    let e = first.take().unwrap_or_else(|| {
                        CallError::Redis(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "batch failed",
                            message.clone(),
                        )))
                    });
                    self.replies.push((t, Err(e)));
                }
            }
        }
    }

    /// The reply to a pushed call, once sent (`None` before, or when taken already).
    pub fn take(&mut self, t: Ticket) -> Option<Result<Value, CallError>> {
        let i = self.replies.iter().position(|(x, _)| *x == t)?;
        Some(self.replies.swap_remove(i).1)
    }
}

impl SharedState {
    /// Several scripts in one pipeline by `EVALSHA` (one round trip); one reply per call, an
    /// error reply as `Value::ServerError`. Scripts Redis does not know (a restarted server)
    /// are loaded and those calls sent again: a second round trip, only then.
    pub async fn eval_many(&self, calls: &[&Call]) -> Result<Vec<Value>, CallError> {
        fn evalsha(pipe: &mut redis::Pipeline, c: &Call) {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(c.script.get_hash()).arg(c.keys.len());
            for k in &c.keys {
                cmd.arg(k.as_slice());
            }
            for a in &c.args {
                cmd.arg(a.as_slice());
            }
            pipe.add_command(cmd);
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for c in calls {
            evalsha(&mut pipe, c);
        }
        let mut out: Vec<Value> = self.pipeline(&pipe).await?;
        let missing: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                matches!(v, Value::ServerError(e)
                    if e.kind() == Some(redis::ServerErrorKind::NoScript))
            })
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in &missing {
                pipe.load_script(calls[i].script).ignore();
            }
            for &i in &missing {
                evalsha(&mut pipe, calls[i]);
            }
            let again: Vec<Value> = self.pipeline(&pipe).await?;
            for (&i, v) in missing.iter().zip(again) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}
