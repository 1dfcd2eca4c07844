//! Extensions that let retries and balancers talk about endpoints.
//!
//! The balancer marks each answer with the endpoint that served it
//! ([`ServedBy`] on responses, [`EndpointError`] around errors); the retry
//! layer collects those into [`AvoidEndpoints`] on the next attempt's
//! request, so the balancer does not pick the endpoint that just failed.

use std::fmt;
use std::sync::Arc;

use tower::BoxError;

/// Response extension: the id of the endpoint that produced the response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServedBy(pub Arc<str>);

/// Request extension: endpoints this request should not be sent to, because
/// an earlier attempt failed there. A balancer honours it when another
/// endpoint is ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvoidEndpoints(pub Vec<Arc<str>>);

impl AvoidEndpoints {
    /// Whether `id` is to be avoided.
    pub fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|e| &**e == id)
    }

    /// Adds `id` once.
    pub fn push(&mut self, id: Arc<str>) {
        if !self.contains(&id) {
            self.0.push(id);
        }
    }
}

/// An error from one endpoint, tagged with that endpoint's id.
#[derive(Debug)]
pub struct EndpointError {
    /// The endpoint that failed.
    pub endpoint: Arc<str>,
    /// What went wrong there.
    pub source: BoxError,
}

impl EndpointError {
    /// Tags `source` with `endpoint`.
    pub fn new(endpoint: Arc<str>, source: impl Into<BoxError>) -> Self {
        EndpointError {
            endpoint,
            source: source.into(),
        }
    }

    /// The endpoint id carried anywhere in `err`'s source chain.
    pub fn endpoint_of(err: &(dyn std::error::Error + 'static)) -> Option<Arc<str>> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(ep) = e.downcast_ref::<EndpointError>() {
                return Some(ep.endpoint.clone());
            }
            cur = e.source();
        }
        None
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint {}: {}", self.endpoint, self.source)
    }
}

impl std::error::Error for EndpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// Finds an error of type `E` anywhere in `err`'s source chain.
pub fn find_in_chain<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    #[test]
    fn endpoint_found_through_chain() {
        let e: BoxError = Box::new(EndpointError::new(Arc::from("r1"), Boom));
        assert_eq!(
            EndpointError::endpoint_of(e.as_ref()).as_deref(),
            Some("r1")
        );
        assert!(find_in_chain::<Boom>(e.as_ref()).is_some());
        let plain: BoxError = Box::new(Boom);
        assert!(EndpointError::endpoint_of(plain.as_ref()).is_none());
        let mut avoid = AvoidEndpoints::default();
        avoid.push(Arc::from("r1"));
        avoid.push(Arc::from("r1"));
        assert_eq!(avoid.0.len(), 1);
        assert!(avoid.contains("r1") && !avoid.contains("r2"));
    }
}
