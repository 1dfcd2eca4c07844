//! [`PriorityOf`]: what the queue learns from a request.

use llmgate_core::{ClientKey, Priority, RequestMeta};
use tokio::time::Instant;

/// Output tokens assumed for a request that names no `max_tokens`, when its
/// cost is estimated for deficit round robin.
pub const DEFAULT_MAX_TOKENS_ESTIMATE: u32 = 256;

/// What the queue needs to know about a request: its priority, who sent it
/// (for fair share), its deadline and its cost (for deficit round robin).
///
/// Implemented for `http::Request<B>`, reading the
/// [`RequestMeta`] extension (a request without one is `Normal`, anonymous,
/// with no own deadline). Implement it for your own request types.
///
/// ```
/// use llmgate_core::Priority;
/// use llmgate_queue::PriorityOf;
///
/// struct Job { urgent: bool }
/// impl PriorityOf for Job {
///     fn priority(&self) -> Priority {
///         if self.urgent { Priority::High } else { Priority::Batch }
///     }
/// }
/// assert_eq!(Job { urgent: true }.priority(), Priority::High);
/// assert_eq!(Job { urgent: false }.cost(), 1);
/// ```
pub trait PriorityOf {
    /// The request's priority.
    fn priority(&self) -> Priority;

    /// The fairness key; `None` shares one anonymous key.
    fn client_key(&self) -> Option<ClientKey> {
        None
    }

    /// When the request must have left the queue at the latest; the queue
    /// uses the earlier of this and its default queue timeout.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The request's cost for deficit round robin (e.g. estimated tokens);
    /// at least 1 is used.
    fn cost(&self) -> u64 {
        1
    }

    /// [`priority`](Self::priority) and [`deadline`](Self::deadline)
    /// together, what the queue reads of every request; override it when
    /// both come from one lookup.
    fn priority_and_deadline(&self) -> (Priority, Option<Instant>) {
        (self.priority(), self.deadline())
    }
}

impl<B> PriorityOf for http::Request<B> {
    fn priority(&self) -> Priority {
        meta(self).map_or(Priority::Normal, |m| m.priority)
    }

    fn client_key(&self) -> Option<ClientKey> {
        meta(self).map(|m| m.client.clone())
    }

    fn deadline(&self) -> Option<Instant> {
        meta(self).map(|m| m.deadline)
    }

    fn priority_and_deadline(&self) -> (Priority, Option<Instant>) {
        meta(self).map_or((Priority::Normal, None), |m| (m.priority, Some(m.deadline)))
    }

    fn cost(&self) -> u64 {
        meta(self).map_or(1, |m| {
            m.estimated_total_tokens(DEFAULT_MAX_TOKENS_ESTIMATE).max(1)
        })
    }
}

fn meta<B>(req: &http::Request<B>) -> Option<&RequestMeta> {
    req.extensions().get::<RequestMeta>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgate_core::EndpointKind;

    #[test]
    fn http_reads_request_meta() {
        let bare = http::Request::new(());
        assert_eq!(bare.priority(), Priority::Normal);
        assert_eq!(bare.client_key(), None);
        assert_eq!(bare.deadline(), None);
        assert_eq!(bare.cost(), 1);
        assert_eq!(bare.priority_and_deadline(), (Priority::Normal, None));

        let mut meta = RequestMeta::new(EndpointKind::Chat)
            .with_priority(Priority::Low)
            .with_client(ClientKey::from_id("a"));
        meta.prompt_tokens = 100;
        meta.max_tokens = Some(50);
        let deadline = meta.deadline;
        let mut req = http::Request::new(());
        req.extensions_mut().insert(meta);
        assert_eq!(req.priority(), Priority::Low);
        assert_eq!(req.client_key(), Some(ClientKey::from_id("a")));
        assert_eq!(req.deadline(), Some(deadline));
        assert_eq!(req.cost(), 150);
        assert_eq!(req.priority_and_deadline(), (Priority::Low, Some(deadline)));
    }
}
