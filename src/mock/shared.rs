//! What the server tasks and the [`MockSpace`](super::MockSpace) handle share.

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use base64::Engine as _;
use zeroize::Zeroizing;

use super::{
    MockEndpoint,
    faults::FaultQueue,
    listing::{Address, directory},
    tokens::Store,
};
use crate::{Credentials, Space};

/// How long the tokens the mock issues live.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lifetimes {
    /// A SAT minted without `expire_at`.
    pub(super) access: Duration,
    /// A SAT from the refresh endpoint.
    pub(super) refreshed_access: Duration,
    /// Every refresh token.
    pub(super) refresh: Duration,
}

/// Counters, faults and tokens, behind one lock that is never held across an `.await`.
#[derive(Debug)]
pub(super) struct State {
    pub(super) store: Store,
    pub(super) faults: FaultQueue,
    pub(super) calls: [usize; MockEndpoint::ALL.len()],
    /// The addresses every subscriber can see, besides the subscribers' own.
    pub(super) addresses: Vec<Address>,
}

pub(super) struct Shared {
    pub(super) space: Space,
    pub(super) credentials: Credentials,
    /// `project_id:api_token`, what a Basic header must decode to.
    basic: Zeroizing<Vec<u8>>,
    pub(super) lifetimes: Lifetimes,
    state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(space: Space, credentials: Credentials, lifetimes: Lifetimes) -> Self {
        let header = credentials.basic_header();
        let encoded = header.as_bytes().get(b"Basic ".len()..).unwrap_or_default();
        // The crate built this header itself, so it decodes; an empty secret would only make
        // every Basic request fail, never panic.
        let basic = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_default(),
        );
        let mut store = Store::new(space.host());
        let addresses = directory(store.entropy());
        Self {
            space,
            credentials,
            basic,
            lifetimes,
            state: Mutex::new(State {
                store,
                faults: FaultQueue::default(),
                calls: [0; MockEndpoint::ALL.len()],
                addresses,
            }),
        }
    }

    /// The state. A panic elsewhere while holding the lock leaves it consistent enough for a
    /// mock (every update is a single step), so poisoning is ignored.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `decoded` (a Basic header's payload, decoded) is the project's credentials.
    pub(super) fn is_project(&self, decoded: &[u8]) -> bool {
        !self.basic.is_empty() && decoded == self.basic.as_slice()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("space", &self.space)
            .field("project_id", &self.credentials.project_id())
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}
