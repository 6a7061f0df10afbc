//! Route templates: the `http_route` label is the first template a
//! request's path matches, never the raw path.

use super::*;

/// A route template: `/users/{id}/orders` matches one segment per `{…}`;
/// a last segment `*` matches the rest of the path.
#[derive(Debug, Clone)]
pub struct Route {
    pub template: Arc<str>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Segment {
    Literal(String),
    Param,
    Rest,
}

impl Route {
    pub fn parse(template: &str) -> Result<Route, String> {
        if !template.starts_with('/') {
            return Err(format!("route {template:?} does not start with /"));
        }
        let parts: Vec<&str> = template.split('/').skip(1).collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            segments.push(if *p == "*" {
                if i + 1 != parts.len() {
                    return Err(format!("route {template:?}: * must be the last segment"));
                }
                Segment::Rest
            } else if p.starts_with('{') && p.ends_with('}') && p.len() > 2 {
                Segment::Param
            } else if p.contains(['{', '}', '*']) {
                return Err(format!(
                    "route {template:?}: segment {p:?} is neither literal, {{name}} nor *"
                ));
            } else {
                Segment::Literal(p.to_string())
            });
        }
        Ok(Route {
            template: Arc::from(template),
            segments,
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = path.split('/');
        for seg in &self.segments {
            match (seg, parts.next()) {
                (Segment::Rest, _) => return true,
                (Segment::Param, Some(p)) if !p.is_empty() => {}
                (Segment::Literal(l), Some(p)) if l == p => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// The index of the first route matching `path`; None (an empty label)
/// otherwise: raw paths never become labels.
pub fn route_index(routes: &[Route], path: &str) -> Option<usize> {
    routes.iter().position(|r| r.matches(path))
}
