//! The balancer's endpoints, split into those ready for a request and those
//! waiting to become ready.
//!
//! tower's `ReadyCache` moves a service to its pending set after every
//! call and polls it back through a `FuturesUnordered` with a cancellation
//! channel: two allocations and a round of wake-ups per request, for
//! endpoints that are nearly always ready again at once. Here a called
//! service stays in the ready set; its readiness is polled again right
//! before its next call (and by the balancer's sweep of endpoints that
//! stopped admitting requests), which is what tower's contract asks.

use std::task::{Context, Poll};

use tower::{BoxError, Service};

/// An endpoint whose `poll_ready` failed: it is removed for good.
#[derive(Debug)]
pub(crate) struct Failed<K>(pub(crate) K, pub(crate) BoxError);

/// Endpoints by key, each either ready or pending.
pub(crate) struct ReadySet<K, S> {
    ready: Vec<(K, S)>,
    pending: Vec<(K, S)>,
}

impl<K, S> Default for ReadySet<K, S> {
    fn default() -> Self {
        ReadySet {
            ready: Vec::new(),
            pending: Vec::new(),
        }
    }
}

impl<K: Eq, S> ReadySet<K, S> {
    /// Adds `svc` under `key` (replacing one already there), pending until
    /// it is polled ready.
    pub(crate) fn push(&mut self, key: K, svc: S) {
        self.evict(&key);
        self.pending.push((key, svc));
    }

    /// Removes the service under `key`; whether there was one.
    pub(crate) fn evict(&mut self, key: &K) -> bool {
        for set in [&mut self.ready, &mut self.pending] {
            if let Some(i) = set.iter().position(|(k, _)| k == key) {
                set.swap_remove(i);
                return true;
            }
        }
        false
    }

    /// How many are ready.
    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// The `i`th ready service. Indices change when a service leaves the
    /// ready set (the last one takes its place).
    pub(crate) fn get_ready_index(&self, i: usize) -> Option<(&K, &S)> {
        self.ready.get(i).map(|(k, s)| (k, s))
    }

    /// Polls the `i`th ready service: `Ok(true)` if still ready,
    /// `Ok(false)` if it moved to pending, an error if it failed (it is
    /// removed).
    pub(crate) fn check_ready_index<Req>(
        &mut self,
        cx: &mut Context<'_>,
        i: usize,
    ) -> Result<bool, Failed<K>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        let Some((_, svc)) = self.ready.get_mut(i) else {
            return Ok(false);
        };
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Pending => {
                let entry = self.ready.swap_remove(i);
                self.pending.push(entry);
                Ok(false)
            }
            Poll::Ready(Err(e)) => {
                let (key, _) = self.ready.swap_remove(i);
                Err(Failed(key, e.into()))
            }
        }
    }

    /// Calls the `i`th ready service, which must have just been polled
    /// ready by [`check_ready_index`](Self::check_ready_index).
    ///
    /// # Panics
    /// If there is no `i`th ready service.
    pub(crate) fn call_ready_index<Req>(&mut self, i: usize, req: Req) -> S::Future
    where
        S: Service<Req>,
    {
        self.ready[i].1.call(req)
    }

    /// Polls every pending service, moving those now ready to the ready
    /// set. `Ready(Ok)` when none is left pending, `Pending` otherwise (each
    /// registered `cx`'s waker), or the first that failed (removed).
    pub(crate) fn poll_pending<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failed<K>>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        for i in (0..self.pending.len()).rev() {
            match self.pending[i].1.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let entry = self.pending.swap_remove(i);
                    self.ready.push(entry);
                }
                Poll::Pending => {}
                Poll::Ready(Err(e)) => {
                    let (key, _) = self.pending.swap_remove(i);
                    return Poll::Ready(Err(Failed(key, e.into())));
                }
            }
        }
        if self.pending.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    use std::task::Waker;

    /// Ready, pending or failing as its shared switch says (0, 1, 2);
    /// answers its own name.
    struct Switch(&'static str, Arc<AtomicU8>);

    impl Service<()> for Switch {
        type Response = &'static str;
        type Error = BoxError;
        type Future = std::future::Ready<Result<&'static str, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            match self.1.load(Ordering::SeqCst) {
                0 => Poll::Ready(Ok(())),
                1 => Poll::Pending,
                _ => Poll::Ready(Err(format!("{} broke", self.0).into())),
            }
        }
        fn call(&mut self, (): ()) -> Self::Future {
            std::future::ready(Ok(self.0))
        }
    }

    fn switch(name: &'static str) -> (Switch, Arc<AtomicU8>) {
        let s = Arc::new(AtomicU8::new(0));
        (Switch(name, s.clone()), s)
    }

    fn poll_pending(set: &mut ReadySet<u8, Switch>) -> Poll<Result<(), Failed<u8>>> {
        set.poll_pending::<()>(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn services_start_pending_stay_ready_after_a_call_and_move_as_they_poll() {
        let mut set = ReadySet::default();
        let (a, a_sw) = switch("a");
        let (b, b_sw) = switch("b");
        set.push(1, a);
        b_sw.store(1, Ordering::SeqCst);
        set.push(2, b);
        assert_eq!(set.ready_len(), 0, "pending until polled");
        assert!(poll_pending(&mut set).is_pending(), "b is still pending");
        assert_eq!(set.ready_len(), 1);
        assert_eq!(set.get_ready_index(0).map(|(k, _)| *k), Some(1));

        let mut cx = Context::from_waker(Waker::noop());
        assert!(set.check_ready_index::<()>(&mut cx, 0).unwrap());
        let answer = set.call_ready_index(0, ());
        assert_eq!(answer.into_inner().unwrap(), "a");
        assert_eq!(set.ready_len(), 1, "a called service stays ready");

        b_sw.store(0, Ordering::SeqCst);
        assert!(poll_pending(&mut set).is_ready());
        assert_eq!(set.ready_len(), 2);

        a_sw.store(1, Ordering::SeqCst);
        let i = (0..2)
            .find(|&i| set.get_ready_index(i).unwrap().0 == &1)
            .unwrap();
        assert!(
            !set.check_ready_index::<()>(&mut cx, i).unwrap(),
            "a went pending"
        );
        assert_eq!(set.ready_len(), 1);
        assert_eq!(set.get_ready_index(0).map(|(k, _)| *k), Some(2));
    }

    #[test]
    fn a_failed_service_is_removed_and_named() {
        let mut set = ReadySet::default();
        let (a, a_sw) = switch("a");
        set.push(7, a);
        assert!(poll_pending(&mut set).is_ready());
        a_sw.store(2, Ordering::SeqCst);
        let mut cx = Context::from_waker(Waker::noop());
        let failed = set.check_ready_index::<()>(&mut cx, 0).unwrap_err();
        assert_eq!((failed.0, failed.1.to_string()), (7, "a broke".to_string()));
        assert_eq!(set.ready_len(), 0);
        assert!(!set.evict(&7), "gone for good");

        let (b, b_sw) = switch("b");
        b_sw.store(2, Ordering::SeqCst);
        set.push(8, b);
        match poll_pending(&mut set) {
            Poll::Ready(Err(Failed(key, _))) => assert_eq!(key, 8),
            other => panic!("{:?}", other.map(|r| r.map_err(|f| f.0))),
        }
        assert!(poll_pending(&mut set).is_ready(), "nothing left pending");
    }

    #[test]
    fn pushing_a_key_again_replaces_its_service() {
        let mut set = ReadySet::default();
        let (a, _) = switch("a");
        let (a2, _) = switch("a2");
        set.push(1, a);
        assert!(poll_pending(&mut set).is_ready());
        set.push(1, a2);
        assert_eq!(set.ready_len(), 0, "the new one is pending");
        assert!(poll_pending(&mut set).is_ready());
        assert_eq!(set.ready_len(), 1);
        let answer = set.call_ready_index(0, ());
        assert_eq!(answer.into_inner().unwrap(), "a2");
        assert!(set.evict(&1));
        assert_eq!(set.ready_len(), 0);
    }
}
