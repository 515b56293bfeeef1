//! What a test can ask of the mock: which endpoint, and how the next calls to it go wrong.

use std::{collections::VecDeque, time::Duration};

use http::{Method, StatusCode};

/// One of the endpoints [`MockSpace`](super::MockSpace) serves, for
/// [`calls`](super::MockSpace::calls) and [`inject`](super::MockSpace::inject).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::{Method, StatusCode};
/// use signalwire_auth::{CreateSubscriberToken, MockSpace, TokenClient, mock::MockEndpoint};
///
/// let mock = MockSpace::start().await?;
/// let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
/// client.create_subscriber_token(&CreateSubscriberToken::new("alice@example.com")).await?;
///
/// let endpoint = MockEndpoint::CreateSubscriberToken;
/// assert_eq!(mock.calls(endpoint), 1);
/// assert_eq!(endpoint.path(), "/api/fabric/subscribers/tokens");
/// assert_eq!(endpoint.method(), Method::POST);
/// assert_eq!(endpoint.success_status(), StatusCode::OK);
/// assert_eq!(MockEndpoint::ALL.iter().map(|e| mock.calls(*e)).sum::<usize>(), 1);
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MockEndpoint {
    /// `POST /api/fabric/subscribers/tokens` (Basic).
    CreateSubscriberToken,
    /// `POST /api/fabric/subscribers/tokens/refresh` (Basic).
    RefreshSubscriberToken,
    /// `POST /api/fabric/guests/tokens` (Basic or a subscriber's Bearer SAT).
    CreateGuestToken,
    /// `POST /api/fabric/subscriber/invites` (a subscriber's Bearer SAT).
    CreateInviteToken,
    /// `POST /api/fabric/embeds/tokens` (no authentication).
    CreateEmbedToken,
    /// `GET /api/fabric/addresses` (Bearer SAT): a resource to try access tokens on.
    ListAddresses,
    /// `GET /api/fabric/subscribers` (Basic): a resource to try project credentials on.
    ListSubscribers,
}

impl MockEndpoint {
    /// Every endpoint, in declaration order.
    pub const ALL: [MockEndpoint; 7] = [
        MockEndpoint::CreateSubscriberToken,
        MockEndpoint::RefreshSubscriberToken,
        MockEndpoint::CreateGuestToken,
        MockEndpoint::CreateInviteToken,
        MockEndpoint::CreateEmbedToken,
        MockEndpoint::ListAddresses,
        MockEndpoint::ListSubscribers,
    ];

    /// The request path, as SignalWire spells it (note the singular `subscriber` of invites).
    pub const fn path(self) -> &'static str {
        match self {
            MockEndpoint::CreateSubscriberToken => "/api/fabric/subscribers/tokens",
            MockEndpoint::RefreshSubscriberToken => "/api/fabric/subscribers/tokens/refresh",
            MockEndpoint::CreateGuestToken => "/api/fabric/guests/tokens",
            MockEndpoint::CreateInviteToken => "/api/fabric/subscriber/invites",
            MockEndpoint::CreateEmbedToken => "/api/fabric/embeds/tokens",
            MockEndpoint::ListAddresses => "/api/fabric/addresses",
            MockEndpoint::ListSubscribers => "/api/fabric/subscribers",
        }
    }

    /// The request method: `POST` for the token endpoints, `GET` for the listings.
    pub fn method(self) -> Method {
        match self {
            MockEndpoint::ListAddresses | MockEndpoint::ListSubscribers => Method::GET,
            _ => Method::POST,
        }
    }

    /// The status of a successful answer: 200 for Create Subscriber Token and the listings,
    /// 201 for the other token endpoints.
    pub fn success_status(self) -> StatusCode {
        match self {
            MockEndpoint::CreateSubscriberToken
            | MockEndpoint::ListAddresses
            | MockEndpoint::ListSubscribers => StatusCode::OK,
            _ => StatusCode::CREATED,
        }
    }

    /// The endpoint at `path`, whatever the method.
    pub(super) fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }

    pub(super) const fn index(self) -> usize {
        self as usize
    }
}

/// How a call goes wrong, for [`MockSpace::inject`](super::MockSpace::inject).
///
/// `Status`, `Garbage` and `Drop` replace the whole answer: the request is not authenticated,
/// read or acted on, so nothing is minted and no refresh token is spent. `Delay`, `Stall` and
/// `LoseAnswer` let the request be handled normally.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use http::StatusCode;
/// use signalwire_auth::{MockSpace, TokenClient, mock::{Fault, MockEndpoint}};
///
/// let mock = MockSpace::start().await?;
/// let client = TokenClient::with_service(mock.space(), Some(mock.credentials()), mock.client());
/// let pair = mock.mint("alice@example.com");
///
/// // The next refresh is rate limited; the one after it goes through.
/// mock.inject(MockEndpoint::RefreshSubscriberToken, Fault::Status(StatusCode::TOO_MANY_REQUESTS), 1);
/// let refresh_token = pair.refresh_token().unwrap_or_default();
/// let error = client.refresh_subscriber_token(refresh_token).await.unwrap_err();
/// let answer = error.api_error().expect("an API error");
/// assert!(answer.is_rate_limited());
/// assert_eq!(answer.retry_after(), Some(std::time::Duration::from_secs(1)));
/// // The faulted call spent nothing: the same refresh token still works.
/// client.refresh_subscriber_token(refresh_token).await?;
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a body of SignalWire's documented error shape
    /// (`{"errors":[{"type","code","message","attribute","url"}]}`). 429 and 503 answers also
    /// carry `retry-after: 1`.
    Status(StatusCode),
    /// Wait this long (`tokio::time::sleep`, so paused test time applies), then answer normally.
    Delay(Duration),
    /// Answer with the endpoint's success status and a body that is not JSON
    /// (`content-type: text/html`), as a misconfigured proxy would.
    Garbage,
    /// Close the connection without answering, before handling the request. Over HTTP/2 this
    /// also cuts the other requests in flight on the same connection, as a real drop would.
    Drop,
    /// Handle the request (a refresh spends the presented refresh token and mints new ones),
    /// then wait this long before answering: a client whose timeout is shorter never learns
    /// the new tokens, although the old refresh token is spent.
    Stall(Duration),
    /// Handle the request (a refresh spends the presented refresh token and mints new ones),
    /// then close the connection without answering, as [`Fault::Drop`] does: the answer is
    /// lost on the way back.
    LoseAnswer,
}

/// Faults waiting for the next calls, per endpoint, in the order they were injected.
#[derive(Debug, Default)]
pub(super) struct FaultQueue {
    queues: [VecDeque<(Fault, usize)>; MockEndpoint::ALL.len()],
}

impl FaultQueue {
    pub(super) fn push(&mut self, endpoint: MockEndpoint, fault: Fault, times: usize) {
        if times > 0 {
            self.queues[endpoint.index()].push_back((fault, times));
        }
    }

    /// The fault for the call arriving now, if any, using up one of its `times`.
    pub(super) fn take(&mut self, endpoint: MockEndpoint) -> Option<Fault> {
        let queue = &mut self.queues[endpoint.index()];
        let (fault, remaining) = queue.front_mut()?;
        let fault = fault.clone();
        *remaining -= 1;
        if *remaining == 0 {
            queue.pop_front();
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_back_to_their_endpoint() {
        for endpoint in MockEndpoint::ALL {
            assert_eq!(MockEndpoint::from_path(endpoint.path()), Some(endpoint));
            assert_eq!(MockEndpoint::ALL[endpoint.index()], endpoint);
        }
        assert_eq!(
            MockEndpoint::from_path("/api/fabric/subscribers/invites"),
            None
        );
        assert_eq!(MockEndpoint::from_path("/api/fabric/addresses/"), None);
    }

    #[test]
    fn faults_are_used_up_in_order() {
        let mut queue = FaultQueue::default();
        let ep = MockEndpoint::RefreshSubscriberToken;
        queue.push(ep, Fault::Garbage, 2);
        queue.push(ep, Fault::Drop, 0);
        queue.push(ep, Fault::Status(StatusCode::BAD_GATEWAY), 1);
        assert_eq!(queue.take(MockEndpoint::ListAddresses), None);
        assert_eq!(queue.take(ep), Some(Fault::Garbage));
        assert_eq!(queue.take(ep), Some(Fault::Garbage));
        assert_eq!(queue.take(ep), Some(Fault::Status(StatusCode::BAD_GATEWAY)));
        assert_eq!(queue.take(ep), None);
    }
}
