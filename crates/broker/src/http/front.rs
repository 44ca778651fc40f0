//! The service in front of the router: ingest requests go straight to their
//! handler, everything else through axum's [`Router`].
//!
//! Why: ingest is the one route that runs tens of thousands of times a
//! second, and the router's per-request work — a boxed clone of the route,
//! a fresh extensions map for the path parameters and the matched path, an
//! owned copy of the topic, two more boxed futures — was about a tenth of
//! the broker's user-space cost per request. The handler is the same
//! function either way; a topic segment that needs percent-decoding, and
//! any other method or path, take the router, so the answers are those of
//! the router in every case.
//!
//! Every request first takes its connection's seat in its role's pool
//! ([`crate::http::seats`]). Every error answer closes its connection, and
//! a body its handler refused before reading (401, 403, 413, a full pool)
//! is read, bounded, beside the answer: closing over unread bytes resets
//! the connection, and a proxy still sending the body would read the reset
//! instead of the answer (and answer its own 502 or 503).

use crate::http::seats::{Seat, SeatRole, Seats};
use crate::http::{ingest_request, ingest_topic, AppState};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use config::tokens::{bearer, Role};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower_service::Service as _;

/// One per listener; cloned per connection (a few `Arc`s and the peer).
#[derive(Clone)]
pub struct Front {
    state: AppState,
    router: Router,
    /// The connection's client address, when served per peer
    /// ([`Front::for_peer`]).
    peer: Option<IpAddr>,
    /// Every role's connection pool (see [`crate::http::seats`]).
    seats: Option<Arc<Seats>>,
    /// This connection's seat (per connection; none on the listener's own).
    seat: Option<Arc<Seat>>,
    /// Where a body its handler dropped unread goes back to (per
    /// connection: its requests are served one at a time, so one slot,
    /// allocated once, serves them all).
    unread: Option<Arc<Mutex<Option<Incoming>>>>,
    /// Whether ingest takes the short way past the router (not on the
    /// operator's listener, whose router has no ingest route).
    fast_ingest: bool,
}

/// How much of a request body refused before it was read is read (and
/// dropped) after the answer, so the client reads the answer rather than a
/// reset (a proxy sending the body would otherwise see the connection cut).
const EARLY_REFUSAL_DRAIN_BYTES: u64 = 1 << 20;

/// And within how long.
const EARLY_REFUSAL_DRAIN_TIME: Duration = Duration::from_secs(5);

/// The client address of the connection a routed request came on (in the
/// request's extensions; not set on the ingest fast path, which does not
/// need it): per-peer state such as capacity reports is bounded by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Front {
    pub fn new(state: AppState, router: Router) -> Self {
        Front { state, router, peer: None, seats: None, seat: None, unread: None, fast_ingest: true }
    }

    /// This front for the operator's listener: every request goes through
    /// its router (which serves no ingest).
    pub fn operator_only(self) -> Self {
        Front { fast_ingest: false, ..self }
    }

    /// This front with connections counted per role in `seats`.
    pub fn with_seats(self, seats: Arc<Seats>) -> Self {
        Front { seats: Some(seats), ..self }
    }

    /// This front for one connection from `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Front {
        let seat = self.seats.as_ref().map(|s| Arc::new(Seat::new(Arc::clone(s), Some(peer.ip()))));
        Front { peer: Some(peer.ip()), seat, unread: Some(Arc::default()), ..self.clone() }
    }

    fn route(&self, req: hyper::Request<hyper::body::Incoming>) -> BoxedResponse {
        let (parts, incoming) = req.into_parts();
        // Given back here if the handler drops it unread (an early refusal).
        let unread = self.unread.clone().unwrap_or_default();
        debug_assert!(take(&unread).is_none(), "a previous request's body left in the slot");
        let body = Body::new(ReturnUnread { inner: Some(incoming), home: Arc::clone(&unread) });
        let mut req = Request::from_parts(parts, body);
        if let Err(refused) = self.sit(&req) {
            self.state.metrics.http_refused.with_label_values(&[refused_reason(&refused)]).inc();
            let resp = refused.into_response();
            drop(req); // its body goes back to `unread`
            let unread = take(&unread);
            return Box::pin(async move { Ok(close_and_drain(resp, unread)) });
        }
        let answer: BoxedResponse =
            if self.fast_ingest && req.method() == Method::POST && ingest_topic(req.uri().path()).is_some() {
                let state = self.state.clone();
                Box::pin(async move { Ok(ingest_request(state, req).await) })
            } else {
                if let Some(ip) = self.peer {
                    req.extensions_mut().insert(Peer(ip));
                }
                let mut router = self.router.clone();
                Box::pin(async move { router.call(req).await })
            };
        Box::pin(async move {
            let resp = answer.await?;
            if resp.status().is_client_error() || resp.status().is_server_error() {
                return Ok(close_and_drain(resp, take(&unread)));
            }
            Ok(resp)
        })
    }

    /// Count this connection in its request's role; refused when that
    /// role's pool is full.
    fn sit(&self, req: &Request) -> Result<(), crate::error::BrokerError> {
        let Some(seat) = &self.seat else {
            return Ok(());
        };
        let auth = req.headers().get(header::AUTHORIZATION).map_or(&b""[..], |v| v.as_bytes());
        let health = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics" | "/openapi.json");
        seat.sit_for(u8::from(health), auth, || self.role_of(req, health))
    }

    fn role_of(&self, req: &Request, health: bool) -> SeatRole {
        let token = bearer(req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
        let role = self.state.broker.get().zip(token).and_then(|(b, t)| b.auth().role(t));
        match role {
            Some(Role::Tenant(id)) => SeatRole::Tenant(id),
            Some(Role::Exporter(_)) => SeatRole::Exporter,
            Some(Role::Admin) => SeatRole::Control,
            None if health => SeatRole::Control,
            None => SeatRole::Anonymous,
        }
    }
}

fn refused_reason(e: &crate::error::BrokerError) -> &'static str {
    e.refusal().unwrap_or(plumbing::reasons::Reason::Connections).as_str()
}

fn take(home: &Mutex<Option<Incoming>>) -> Option<Incoming> {
    home.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// An error answer that closes its connection; a body the handler left
/// unread is read (bounded) beside the answer, then dropped.
fn close_and_drain(mut resp: Response, unread: Option<Incoming>) -> Response {
    resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    if let Some(body) = unread {
        tokio::spawn(api::http::body::drain(Body::new(body), EARLY_REFUSAL_DRAIN_BYTES, EARLY_REFUSAL_DRAIN_TIME));
    }
    resp
}

/// A request body that, dropped before its end, goes back to `home`.
struct ReturnUnread {
    inner: Option<Incoming>,
    home: Arc<Mutex<Option<Incoming>>>,
}

impl hyper::body::Body for ReturnUnread {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(b) => hyper::body::Body::poll_frame(Pin::new(b), cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.as_ref().map_or_else(|| hyper::body::SizeHint::with_exact(0), hyper::body::Body::size_hint)
    }
}

impl Drop for ReturnUnread {
    fn drop(&mut self) {
        if let Some(b) = self.inner.take() {
            if !hyper::body::Body::is_end_stream(&b) {
                *self.home.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
            }
        }
    }
}

/// What hyper calls for each request of a connection (see [`crate::listener`]).
impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.route(req)
    }
}
