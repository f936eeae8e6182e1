//! Which deployments of a group a request may use at all: LiteLLM's tag routing
//! (`router_settings.enable_tag_filtering`, deployments' `litellm_params.tags`) and region
//! pinning (`allowed_model_region` on an end user or key). Each deployment's tags and region
//! are worked out once, when the snapshot is built ([`Placement`]); per request the filter
//! yields the indices it rules out, which selection skips on every attempt, retry and fallback
//! group alike, so neither retries nor fallbacks ever leave the allowed tags or region. A
//! request with no tags and no region (or tag filtering off) costs a branch and allocates
//! nothing.
//!
//! Tag rules, as LiteLLM's `tag_based_routing.py`:
//! - request tags: a deployment matches when it shares one tag with the request
//!   (`tag_filtering_match_any: true`, the default) or carries all of them (`false`); with no
//!   match the `default`-tagged deployments serve; with none of those either the request is
//!   refused (400, "Not allowed to access model due to tags configuration").
//! - no request tags: the `default`-tagged deployments when the group has any, else all.
//! - `tag_regex`: a deployment's patterns are matched against `User-Agent: <the request's>`;
//!   a match counts as a tag match (with `tag_filtering_match_any: false`, only for a deployment
//!   without plain tags, so a pattern never gets round the strict policy). A request with a
//!   User-Agent, no `&` tags and a pattern-carrying deployment in reach is matched this way
//!   even when it sends no tags (Claude Code's `claude-cli/…` to its own deployments).
//! - markers: `!tag` rules out the deployments carrying `tag`; `&tag` keeps only those carrying
//!   it (every `&` tag). They narrow the deployments before the plain tags match, and a known
//!   plain tag (one some deployment of the group carries) that matches nothing they left is
//!   refused rather than sent to a `default` deployment. With markers and no plain tags, the
//!   `&` tags pick from the whole group, the `!` tags alone from the `default`-tagged
//!   deployments (all when none are). A lone `!` or `&` is no tag.

use super::{Deployment, ModelGroup};
use crate::config::{DeploymentConfig, RouterSettings};
use crate::error::{ErrorKind, GatewayError};

/// An `allowed_model_region` (LiteLLM's `AllowedModelRegion`: `eu` or `us`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Eu,
    Us,
}

impl Region {
    pub fn parse(s: &str) -> Option<Region> {
        match s.trim().to_ascii_lowercase().as_str() {
            "eu" => Some(Region::Eu),
            "us" => Some(Region::Us),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Region::Eu => "eu",
            Region::Us => "us",
        }
    }
}

/// A deployment's tags and region, resolved when the snapshot is built.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub tags: Vec<String>,
    /// `tag_regex`, compiled (the patterns were checked at load).
    pub tag_regex: Vec<regex::Regex>,
    /// Carries the `default` tag: serves untagged requests (and unmatched ones).
    pub default_tagged: bool,
    /// The configured (or derived) region name, e.g. `eu-west-1`, `swedencentral`, `eu`.
    pub region_name: Option<String>,
    /// Where that region is, when known.
    pub region: Option<Region>,
}

impl Placement {
    pub fn of(dep: &DeploymentConfig) -> Placement {
        let region_name = region_name(dep);
        let region = region_name
            .as_deref()
            .and_then(|name| classify(&dep.provider, name));
        Placement {
            default_tagged: dep.params.tags.iter().any(|t| t == "default"),
            tags: dep.params.tags.clone(),
            tag_regex: dep
                .params
                .tag_regex
                .iter()
                .filter_map(|p| crate::config::litellm::compile_tag_regex(p).ok())
                .collect(),
            region_name,
            region,
        }
    }
}

/// A deployment's region as LiteLLM's `_get_model_region` finds it: Vertex's
/// `vertex_location`, Bedrock's `aws_region_name`, else `region_name`; for Azure also the
/// region of a regional endpoint (`https://<region>.api.cognitive.microsoft.com`).
fn region_name(dep: &DeploymentConfig) -> Option<String> {
    let p = &dep.params;
    let provider_specific = match dep.provider.as_str() {
        "vertex_ai" | "vertex_ai_beta" | "gemini_vertex" => p.extra_str("vertex_location"),
        "bedrock" | "sagemaker" => p.extra_str("aws_region_name"),
        _ => None,
    };
    if let Some(r) = provider_specific.or_else(|| p.extra_str("region_name")) {
        return Some(r.to_string());
    }
    if dep.provider == "azure" {
        let base = p.api_base.as_deref()?;
        let host = base.split("://").nth(1)?.split(['/', ':']).next()?;
        let region = host.strip_suffix(".api.cognitive.microsoft.com")?;
        if !region.contains('.') {
            return Some(region.to_string());
        }
    }
    None
}

/// Azure's EU and US regions as LiteLLM lists them (`AzureOpenAIConfig.get_*_regions`).
const AZURE_EU: &[&str] = &["europe", "sweden", "switzerland", "france", "uk"];
const AZURE_US: &[&str] = &[
    "eastus",
    "eastus2",
    "eastus2euap",
    "eastus3",
    "southcentralus",
    "westus",
    "westus2",
    "westus3",
    "westus4",
    "northcentralus",
    "centralus",
];

/// `eu`/`us` for a region name: the literal names, Azure's region names, and the
/// `eu-*`/`europe-*`/`us-*` prefixes AWS and Google use. Anything else (`ap-south-1`,
/// `asia-east1`, an unknown name) is in neither.
fn classify(provider: &str, name: &str) -> Option<Region> {
    let name = name.trim().to_ascii_lowercase();
    if let Some(r) = Region::parse(&name) {
        return Some(r);
    }
    if provider == "azure" {
        if AZURE_EU.iter().any(|r| name.contains(r)) {
            return Some(Region::Eu);
        }
        if AZURE_US.contains(&name.as_str()) {
            return Some(Region::Us);
        }
        return None;
    }
    if name.starts_with("eu-") || name.starts_with("europe-") {
        Some(Region::Eu)
    } else if name.starts_with("us-") {
        Some(Region::Us)
    } else {
        None
    }
}

/// What one request allows: its tags (when tag filtering is on) and its region.
#[derive(Debug, Default)]
pub struct RouteFilter {
    /// The request's tags (body, header, key); empty with tag filtering off.
    pub tags: Vec<String>,
    /// Tag filtering is on (`router_settings.enable_tag_filtering`).
    pub tag_filtering: bool,
    pub match_any: bool,
    /// `User-Agent: <value>`, for `tag_regex` (set only when the snapshot has patterns).
    pub user_agent_line: Option<String>,
    pub region: Option<Region>,
    /// Who pinned the region (for the error): `end user`, `key`.
    pub region_from: &'static str,
}

impl RouteFilter {
    /// A filter with tag filtering as `router` configures it.
    pub fn new(router: &RouterSettings) -> RouteFilter {
        RouteFilter {
            tag_filtering: router.enable_tag_filtering,
            match_any: router.tag_filtering_match_any,
            ..RouteFilter::default()
        }
    }

    /// Adds tags, skipping blanks and repeats.
    pub fn add_tags<'a>(&mut self, tags: impl IntoIterator<Item = &'a str>) {
        for t in tags {
            let t = t.trim();
            if !t.is_empty() && !self.tags.iter().any(|have| have == t) {
                self.tags.push(t.to_string());
            }
        }
    }

    fn inactive(&self) -> bool {
        !self.tag_filtering && self.region.is_none()
    }

    /// The plain tags (no `!`/`&` marker): the ones deployments match on.
    fn plain_tags(&self) -> impl Iterator<Item = &String> {
        self.tags
            .iter()
            .filter(|t| !t.starts_with('!') && !t.starts_with('&'))
    }

    /// The tags after `marker` (`!`: excluded, `&`: required); a lone marker is no tag.
    fn marked_tags(&self, marker: char) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .filter_map(move |t| t.strip_prefix(marker).filter(|rest| !rest.is_empty()))
    }

    /// The deployment survives the `!` and `&` markers.
    fn satisfies_markers(&self, d: &Deployment) -> bool {
        let have = &d.placement.tags;
        !self.marked_tags('!').any(|t| have.iter().any(|h| h == t))
            && self.marked_tags('&').all(|t| have.iter().any(|h| h == t))
    }

    fn tag_match(&self, d: &Deployment) -> bool {
        let have = &d.placement.tags;
        let has_plain = self.plain_tags().next().is_some();
        let by_tags = has_plain
            && !have.is_empty()
            && if self.match_any {
                self.plain_tags().any(|t| have.contains(t))
            } else {
                self.plain_tags().all(|t| have.contains(t))
            };
        // LiteLLM: under match-all, a deployment with plain tags is matched by them alone.
        by_tags || ((self.match_any || have.is_empty()) && self.regex_match(d))
    }

    /// One of the deployment's `tag_regex` patterns matches the request's User-Agent line.
    fn regex_match(&self, d: &Deployment) -> bool {
        match &self.user_agent_line {
            Some(line) => d.placement.tag_regex.iter().any(|r| r.is_match(line)),
            None => false,
        }
    }
}

impl ModelGroup {
    /// The deployments (indices) `filter` rules out of this group, or the error when it rules
    /// out all of them. Empty (and not allocated) when the filter asks for nothing.
    pub fn ruled_out(&self, filter: &RouteFilter) -> Result<Vec<usize>, GatewayError> {
        if filter.inactive() {
            return Ok(Vec::new());
        }
        let n = self.deployments.len();
        let mut allowed = vec![true; n];
        if filter.tag_filtering {
            self.allow_by_tags(filter, &mut allowed)?;
        }
        if let Some(region) = filter.region {
            let before = allowed.iter().any(|a| *a);
            for (i, d) in self.deployments.iter().enumerate() {
                allowed[i] &= d.placement.region == Some(region);
            }
            if before && !allowed.iter().any(|a| *a) {
                return Err(self.no_region_match(filter, region));
            }
        }
        Ok((0..n).filter(|&i| !allowed[i]).collect())
    }

    /// LiteLLM's `get_deployments_for_tag` on `allowed` (all true on entry).
    fn allow_by_tags(
        &self,
        filter: &RouteFilter,
        allowed: &mut [bool],
    ) -> Result<(), GatewayError> {
        let deps = &self.deployments;
        let has_required = filter.marked_tags('&').next().is_some();
        let has_excluded = filter.marked_tags('!').next().is_some();
        // A User-Agent counts as a positive filter when a deployment the markers leave has
        // patterns to match it (and no `&` tag asks for something specific).
        let by_regex = !has_required
            && filter.user_agent_line.is_some()
            && deps
                .iter()
                .any(|d| !d.placement.tag_regex.is_empty() && filter.satisfies_markers(d));
        let has_plain = filter.plain_tags().next().is_some() || by_regex;
        let any_default = deps.iter().any(|d| d.placement.default_tagged);
        if !has_plain && !has_required && !has_excluded {
            // Untagged: the default deployments when there are any, else all.
            if any_default {
                for (a, d) in allowed.iter_mut().zip(deps) {
                    *a = d.placement.default_tagged;
                }
            }
            return Ok(());
        }
        if !has_plain {
            // Markers only: `&` picks from the whole group; `!` alone from the defaults.
            for (a, d) in allowed.iter_mut().zip(deps) {
                let pool = has_required || !any_default || d.placement.default_tagged;
                *a = pool && filter.satisfies_markers(d);
            }
            if !allowed.iter().any(|a| *a) {
                return Err(self.no_tag_match(filter));
            }
            return Ok(());
        }
        let candidate = |d: &Deployment| filter.satisfies_markers(d);
        let any_match = deps.iter().any(|d| candidate(d) && filter.tag_match(d));
        if any_match {
            for (a, d) in allowed.iter_mut().zip(deps) {
                *a = candidate(d) && filter.tag_match(d);
            }
            return Ok(());
        }
        // No match: the default deployments the markers leave, unless the plain tags are ones
        // this group knows (then the request asked for something it may not have).
        let known = filter
            .plain_tags()
            .any(|t| deps.iter().any(|d| d.placement.tags.contains(t)));
        for (a, d) in allowed.iter_mut().zip(deps) {
            *a = !known && candidate(d) && d.placement.default_tagged;
        }
        if !allowed.iter().any(|a| *a) {
            return Err(self.no_tag_match(filter));
        }
        Ok(())
    }

    fn no_tag_match(&self, filter: &RouteFilter) -> GatewayError {
        let why = if filter.plain_tags().next().is_none() && filter.user_agent_line.is_some() {
            format!(
                "matches '{}' with its tag_regex, and none is tagged 'default'",
                filter.user_agent_line.as_deref().unwrap_or_default()
            )
        } else if filter.plain_tags().next().is_none() {
            "is left by the '!tag' (must not carry) and '&tag' (must carry) markers".to_string()
        } else {
            let markers = filter.tags.iter().any(|t| t.starts_with(['!', '&']));
            format!(
                "{}carries {} of these tags (litellm_params.tags); 'default'-tagged deployments serve only tags no deployment of the group carries",
                if markers { "left by the '!tag'/'&tag' markers " } else { "" },
                if filter.match_any { "any" } else { "all" },
            )
        };
        GatewayError::new(
            ErrorKind::BadRequest,
            format!(
                "Not allowed to access model due to tags configuration. Passed model={} and tags={:?}: no deployment of '{}' {why}.",
                self.name, filter.tags, self.name,
            ),
        )
        .with_code("no_deployments_with_tag_routing")
    }

    fn no_region_match(&self, filter: &RouteFilter, region: Region) -> GatewayError {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!(
                "No deployment of model '{}' is in region '{}' (the {}'s allowed_model_region); the request was not sent to any other region. Deployments declare their region with litellm_params.region_name (or aws_region_name / vertex_location).",
                self.name,
                region.as_str(),
                filter.region_from,
            ),
        )
        .with_param("model")
        .with_code("no_deployments_in_region")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(yaml: &str) -> std::sync::Arc<ModelGroup> {
        let config = crate::config::litellm::parse(yaml).unwrap();
        let client = std::sync::Arc::new(crate::upstream::UpstreamClient::new(4));
        let s = super::super::Snapshot::build(
            config,
            1,
            &client,
            &super::super::StateRegistry::default(),
        )
        .unwrap();
        s.resolve("g").unwrap()
    }

    fn filter(tags: &[&str], match_any: bool) -> RouteFilter {
        let mut f = RouteFilter {
            tag_filtering: true,
            match_any,
            ..RouteFilter::default()
        };
        f.add_tags(tags.iter().copied());
        f
    }

    const TAGGED: &str = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/a, mock_response: a, tags: [free, eu]}}
  - {model_name: g, litellm_params: {model: openai/b, mock_response: b, tags: [paid]}}
  - {model_name: g, litellm_params: {model: openai/c, mock_response: c, tags: [default]}}
"#;

    #[test]
    fn tags_match_any_or_all_then_default_then_refuse() {
        let g = group(TAGGED);
        assert_eq!(g.ruled_out(&filter(&["free"], true)).unwrap(), [1, 2]);
        assert_eq!(g.ruled_out(&filter(&["free", "paid"], true)).unwrap(), [2]);
        assert_eq!(
            g.ruled_out(&filter(&["free", "eu"], false)).unwrap(),
            [1, 2]
        );
        // No match for tags the group knows: refused (LiteLLM's `_tag_known_to_group`), not
        // sent to the default deployment.
        assert!(g.ruled_out(&filter(&["free", "paid"], false)).is_err());
        // Tags it does not know: the default deployment serves; untagged requests too.
        assert_eq!(g.ruled_out(&filter(&["other"], true)).unwrap(), [0, 1]);
        assert_eq!(g.ruled_out(&filter(&[], true)).unwrap(), [0, 1]);
        // Tag filtering off: nothing is ruled out.
        assert!(g.ruled_out(&RouteFilter::default()).unwrap().is_empty());

        let g = group(&TAGGED.replace("[default]", "[x]"));
        assert!(g.ruled_out(&filter(&[], true)).unwrap().is_empty());
        let e = g.ruled_out(&filter(&["other"], true)).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e
            .message
            .contains("Not allowed to access model due to tags configuration"));
    }

    #[test]
    fn not_and_must_markers() {
        let g = group(TAGGED);
        // `!free` rules out the free deployment; alone it picks from the default ones.
        assert_eq!(g.ruled_out(&filter(&["!paid"], true)).unwrap(), [0, 1]);
        assert!(g.ruled_out(&filter(&["!default"], true)).is_err());
        // `&eu` keeps only deployments carrying eu, from the whole group.
        assert_eq!(g.ruled_out(&filter(&["&eu"], true)).unwrap(), [1, 2]);
        assert_eq!(
            g.ruled_out(&filter(&["&eu", "&free"], true)).unwrap(),
            [1, 2]
        );
        assert!(g.ruled_out(&filter(&["&eu", "&paid"], true)).is_err());
        // With plain tags: matched among the deployments the markers leave.
        assert_eq!(
            g.ruled_out(&filter(&["free", "paid", "!eu"], true))
                .unwrap(),
            [0, 2]
        );
        // A known tag the markers rule out is refused, not sent to the default deployment.
        let e = g.ruled_out(&filter(&["free", "!eu"], true)).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("markers"), "{}", e.message);
        // An unknown tag still falls to the default deployment, if the markers leave it.
        assert_eq!(
            g.ruled_out(&filter(&["other", "!eu"], true)).unwrap(),
            [0, 1]
        );
        assert!(g.ruled_out(&filter(&["other", "&eu"], true)).is_err());
        // A lone marker is no tag: the request counts as untagged.
        assert_eq!(g.ruled_out(&filter(&["!", "&"], true)).unwrap(), [0, 1]);
    }

    const BY_AGENT: &str = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/a, mock_response: a, tag_regex: ["^User-Agent: claude-cli/"]}}
  - {model_name: g, litellm_params: {model: openai/b, mock_response: b, tags: [paid], tag_regex: ["^User-Agent: curl/"]}}
  - {model_name: g, litellm_params: {model: openai/c, mock_response: c, tags: [default]}}
"#;

    fn with_agent(tags: &[&str], match_any: bool, agent: &str) -> RouteFilter {
        let mut f = filter(tags, match_any);
        f.user_agent_line = Some(format!("User-Agent: {agent}"));
        f
    }

    #[test]
    fn tag_regex_matches_the_user_agent_line() {
        let g = group(BY_AGENT);
        assert_eq!(g.deployments[0].placement.tag_regex.len(), 1);
        // The agent alone picks the deployment whose pattern matches it.
        let claude = with_agent(&[], true, "claude-cli/2.1.3 (external, cli)");
        assert_eq!(g.ruled_out(&claude).unwrap(), [1, 2]);
        assert_eq!(
            g.ruled_out(&with_agent(&[], true, "curl/8.5")).unwrap(),
            [0, 2]
        );
        // An agent no pattern matches: the default deployment.
        assert_eq!(
            g.ruled_out(&with_agent(&[], true, "python-httpx/0.27"))
                .unwrap(),
            [0, 1]
        );
        // No agent at all: an untagged request.
        assert_eq!(g.ruled_out(&filter(&[], true)).unwrap(), [0, 1]);
        // Tags and the agent both count (match any): claude-cli's deployment and the paid one.
        assert_eq!(
            g.ruled_out(&with_agent(&["paid"], true, "claude-cli/2"))
                .unwrap(),
            [2]
        );
        // Match all: a deployment with plain tags is matched by its tags only, so b's pattern
        // cannot get a request past the strict policy; a's (no plain tags) still can.
        assert_eq!(
            g.ruled_out(&with_agent(&["free"], false, "curl/8"))
                .unwrap(),
            [0, 1]
        );
        assert_eq!(
            g.ruled_out(&with_agent(&["paid"], false, "curl/8"))
                .unwrap(),
            [0, 2]
        );
        // `!` markers apply to what the pattern matched.
        assert_eq!(
            g.ruled_out(&with_agent(&["!paid"], true, "curl/8"))
                .unwrap(),
            [0, 1]
        );
        // `&` tags ask for something specific: the agent is not matched then.
        assert_eq!(
            g.ruled_out(&with_agent(&["&paid"], true, "claude-cli/2"))
                .unwrap(),
            [0, 2]
        );

        // Without a default deployment, an agent nothing matches is refused, naming it.
        let g = group(&BY_AGENT.replace("[default]", "[x]"));
        let e = g
            .ruled_out(&with_agent(&[], true, "python-httpx/0.27"))
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("User-Agent: python-httpx/0.27"),
            "{}",
            e.message
        );
        assert!(e.message.contains("tag_regex"), "{}", e.message);
    }

    #[test]
    fn regions_come_from_region_name_or_provider_settings() {
        let g = group(
            r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/a, mock_response: a, region_name: eu}}
  - {model_name: g, litellm_params: {model: bedrock/b, mock_response: b, aws_region_name: eu-central-1}}
  - {model_name: g, litellm_params: {model: vertex_ai/c, mock_response: c, vertex_location: us-central1}}
  - {model_name: g, litellm_params: {model: azure/d, mock_response: d, region_name: swedencentral}}
  - {model_name: g, litellm_params: {model: azure/e, mock_response: e, api_base: "https://eastus.api.cognitive.microsoft.com"}}
  - {model_name: g, litellm_params: {model: openai/f, mock_response: f}}
"#,
        );
        let regions: Vec<Option<Region>> =
            g.deployments.iter().map(|d| d.placement.region).collect();
        use Region::*;
        assert_eq!(
            regions,
            [Some(Eu), Some(Eu), Some(Us), Some(Eu), Some(Us), None]
        );
        let eu = RouteFilter {
            region: Some(Eu),
            region_from: "end user",
            ..RouteFilter::default()
        };
        assert_eq!(g.ruled_out(&eu).unwrap(), [2, 4, 5]);
        let g = group(
            "model_list:\n  - {model_name: g, litellm_params: {model: openai/f, mock_response: f, region_name: us-east-1}}\n",
        );
        let e = g.ruled_out(&eu).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("region 'eu'"), "{}", e.message);
    }
}
