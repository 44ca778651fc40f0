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

use crate::http::{ingest_request, ingest_topic, AppState};
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use axum::Router;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use tower_service::Service as _;

/// One per listener; cloned per connection (two `Arc`s and the peer).
#[derive(Clone)]
pub struct Front {
    state: AppState,
    router: Router,
    /// The connection's client address, when served per peer
    /// ([`Front::for_peer`]).
    peer: Option<IpAddr>,
}

/// The client address of the connection a routed request came on (in the
/// request's extensions; not set on the ingest fast path, which does not
/// need it): per-peer state such as capacity reports is bounded by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Front {
    pub fn new(state: AppState, router: Router) -> Self {
        Front { state, router, peer: None }
    }

    /// This front for one connection from `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Front {
        Front { peer: Some(peer.ip()), ..self.clone() }
    }

    fn route(&self, mut req: Request) -> BoxedResponse {
        if req.method() == Method::POST && ingest_topic(req.uri().path()).is_some() {
            let state = self.state.clone();
            return Box::pin(async move { Ok(ingest_request(state, req).await) });
        }
        if let Some(ip) = self.peer {
            req.extensions_mut().insert(Peer(ip));
        }
        let mut router = self.router.clone();
        Box::pin(async move { router.call(req).await })
    }
}

/// What hyper calls for each request of a connection (see [`crate::listener`]).
impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.route(req.map(axum::body::Body::new))
    }
}
