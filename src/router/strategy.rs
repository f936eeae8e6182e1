//! Routing strategies: which of a group's available deployments takes a request, with
//! LiteLLM's names (`router_settings.routing_strategy`). Candidates arrive already filtered
//! (cooldown, limits, health, priority tier); a strategy only ranks them.
//!
//! simple-shuffle draws with Pingora's `Weighted<Random>` selection
//! (`pingora_load_balancing`), built once per tier at snapshot build over synthetic backends
//! whose port is the deployment's index in its group. Pingora's weighted iterator is weighted
//! only on its first draw (later draws are uniform), and it cannot skip deployments that are
//! cooling or at their limits; so when its draw is not a candidate, the pick is redrawn here
//! in proportion to the candidates' own weights, which keeps the distribution right among the
//! deployments that can take the request.

use super::{rng, Deployment};
use crate::config::RoutingStrategy;
use pingora_load_balancing::selection::algorithms::Random;
use pingora_load_balancing::selection::weighted::Weighted;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Units the largest weight of a tier is scaled to for Pingora's weighted table.
const WEIGHT_SCALE: f64 = 1000.0;

/// Pingora's weighted table over some of a group's deployments (`members`: group indices).
pub struct WeightedTable {
    table: Arc<Weighted<Random>>,
}

impl WeightedTable {
    /// None when weights are all zero (Pingora's table would be empty) or there are more
    /// deployments than its u16 index space.
    pub fn build(deployments: &[Arc<Deployment>], members: &[usize]) -> Option<Self> {
        let max = members
            .iter()
            .map(|&i| deployments[i].weight)
            .fold(0.0f64, f64::max);
        if max <= 0.0 || members.len() > u16::MAX as usize {
            return None;
        }
        let mut set = BTreeSet::new();
        for &i in members {
            let w = deployments[i].weight;
            let units = if w > 0.0 {
                ((w / max) * WEIGHT_SCALE).round().max(1.0) as usize
            } else {
                0
            };
            let b = Backend::new_with_weight(&format!("127.0.0.1:{i}"), units).ok()?;
            set.insert(b);
        }
        Some(WeightedTable {
            table: Arc::new(Weighted::build(&set)),
        })
    }

    /// One weighted draw: a group index.
    fn draw(&self) -> Option<usize> {
        let mut it = self.table.iter(b"");
        it.next()
            .and_then(|b| b.addr.as_inet())
            .map(|a| a.port() as usize)
    }
}

pub struct Choice<'a> {
    pub strategy: RoutingStrategy,
    pub stream: bool,
    pub latency_buffer: f64,
    pub weighted: Option<&'a WeightedTable>,
}

impl Choice<'_> {
    /// Picks one of `candidates` (indices into `deployments`, never empty); returns its
    /// position in `candidates`.
    pub fn pick(&self, deployments: &[Arc<Deployment>], candidates: &[usize]) -> usize {
        if candidates.len() == 1 {
            return 0;
        }
        let d = |pos: usize| &deployments[candidates[pos]];
        match self.strategy {
            RoutingStrategy::SimpleShuffle => {
                if let Some(drawn) = self.weighted.and_then(|t| t.draw()) {
                    if let Some(pos) = candidates.iter().position(|&c| c == drawn) {
                        return pos;
                    }
                }
                weighted_pick(candidates.iter().map(|&i| deployments[i].weight))
            }
            RoutingStrategy::LeastBusy => {
                lowest(candidates.len(), 0.0, |p| d(p).state.in_flight() as f64)
            }
            RoutingStrategy::LatencyBased => {
                // Unmeasured deployments rank first so every one gets measured.
                lowest(candidates.len(), self.latency_buffer, |p| {
                    let s = &d(p).state;
                    let measured = if self.stream {
                        s.ttft_ewma().or(s.latency_ewma())
                    } else {
                        s.latency_ewma().or(s.ttft_ewma())
                    };
                    measured.map(|t| t.as_secs_f64()).unwrap_or(0.0)
                })
            }
            RoutingStrategy::UsageBased => {
                let now = std::time::Instant::now();
                lowest(candidates.len(), 0.0, |p| {
                    let dep = d(p);
                    let (requests, tokens) = dep.state.minute_usage(now);
                    // Share of the limit used when there is one, else raw usage; tokens first.
                    let tpm_share = match dep.limits.tpm {
                        Some(t) if t > 0 => tokens as f64 / t as f64,
                        _ => tokens as f64,
                    };
                    let rpm_share = match dep.limits.rpm {
                        Some(r) if r > 0 => requests as f64 / r as f64,
                        _ => requests as f64,
                    };
                    tpm_share * 1e6 + rpm_share
                })
            }
            RoutingStrategy::CostBased => lowest(candidates.len(), 0.0, |p| {
                let c = &d(p).config.params;
                match (c.input_cost_per_token, c.output_cost_per_token) {
                    (None, None) => f64::INFINITY,
                    (i, o) => i.unwrap_or(0.0) + o.unwrap_or(0.0),
                }
            }),
        }
    }
}

/// A weighted random position; uniform when all weights are zero.
pub fn weighted_pick(weights: impl Iterator<Item = f64> + Clone) -> usize {
    let total: f64 = weights.clone().map(|w| w.max(0.0)).sum();
    let n = weights.clone().count();
    if total <= 0.0 {
        return rng::below(n as u64) as usize;
    }
    let mut point = rng::unit() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        let w = w.max(0.0);
        if w > 0.0 {
            last = i;
            if point < w {
                return i;
            }
            point -= w;
        }
    }
    last
}

/// The position with the lowest key; among those within `(1 + buffer) ×` the lowest, a random
/// one (ties are broken at random so equal deployments share the load).
fn lowest(n: usize, buffer: f64, key: impl Fn(usize) -> f64) -> usize {
    let best = (0..n).map(&key).fold(f64::INFINITY, f64::min);
    let limit = if best.is_finite() {
        best * (1.0 + buffer)
    } else {
        f64::INFINITY
    };
    let mut chosen = 0;
    let mut seen = 0u64;
    for p in 0..n {
        let k = key(p);
        if k <= limit || (k.is_infinite() && limit.is_infinite()) {
            seen += 1;
            if rng::below(seen) == 0 {
                chosen = p;
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_follows_weights() {
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[weighted_pick([1.0, 0.0, 3.0].into_iter())] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = counts[2] as f64 / 30_000.0;
        assert!((share - 0.75).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn lowest_breaks_ties_at_random_and_honours_buffer() {
        let keys = [2.0, 1.0, 1.0, 5.0];
        let mut seen = [0u32; 4];
        for _ in 0..1000 {
            seen[lowest(4, 0.0, |p| keys[p])] += 1;
        }
        assert_eq!((seen[0], seen[3]), (0, 0));
        assert!(seen[1] > 300 && seen[2] > 300, "{seen:?}");
        let mut seen = [0u32; 4];
        for _ in 0..1000 {
            seen[lowest(4, 1.0, |p| keys[p])] += 1;
        }
        assert!(seen[0] > 0 && seen[3] == 0, "{seen:?}");
    }
}
