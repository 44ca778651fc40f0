//! Every endpoint's path, in one place: the patterns the broker's router
//! matches and the builders its clients call, so the two cannot drift; and
//! the lease and admin actions as enums, never as string literals.

use std::fmt;
use std::str::FromStr;

/// Router patterns (axum's `{name}` captures).
pub mod pattern {
    /// Ingest into a topic ([`super::ingest`]).
    pub const INGEST: &str = "/v1/topics/{topic}/records";
    /// Acquire a lease ([`super::leases`]).
    pub const LEASES: &str = "/v1/destinations/{dest}/leases";
    /// Act on a lease ([`super::lease_action`]).
    pub const LEASE_ACTION: &str = "/v1/destinations/{dest}/leases/{id}/{action}";
    /// The topics a destination receives ([`super::topics`]).
    pub const TOPICS: &str = "/v1/destinations/{dest}/topics";
    /// Every destination's status ([`super::destinations`]).
    pub const DESTINATIONS: &str = "/v1/admin/destinations";
    /// One destination's status ([`super::destination`]).
    pub const DESTINATION: &str = "/v1/admin/destinations/{dest}";
    /// A destination's dead letters ([`super::dead_letters`]).
    pub const DEAD_LETTERS: &str = "/v1/admin/destinations/{dest}/dead-letters";
    /// An operator's action ([`super::admin_action`]).
    pub const ADMIN_ACTION: &str = "/v1/admin/destinations/{dest}/{action}";
}

/// `POST` here to ingest into `topic`. No client in this workspace builds
/// it (producers are other programs); kept so that every pattern has its
/// builder, checked against it by the tests.
pub fn ingest(topic: &str) -> String {
    format!("/v1/topics/{topic}/records")
}

/// `POST` here to acquire a lease of `dest`.
pub fn leases(dest: &str) -> String {
    format!("/v1/destinations/{dest}/leases")
}

/// `POST` here to act on lease `id` of `dest`.
pub fn lease_action(dest: &str, id: &str, action: LeaseAction) -> String {
    format!("/v1/destinations/{dest}/leases/{id}/{action}")
}

/// `GET` (the destination's exporter token): the topics `dest` receives,
/// and which topics are the OTLP signals' ([`crate::lease::DestinationTopics`]).
pub fn topics(dest: &str) -> String {
    format!("/v1/destinations/{dest}/topics")
}

/// `GET`: every destination's status.
pub fn destinations() -> &'static str {
    "/v1/admin/destinations"
}

/// `GET`: one destination's status. Not called in this workspace yet
/// (`broker-admin destinations` lists them all); kept so that every
/// pattern has its builder, checked against it by the tests.
pub fn destination(dest: &str) -> String {
    format!("/v1/admin/destinations/{dest}")
}

/// `GET`: a destination's dead letters, at most `limit`.
pub fn dead_letters(dest: &str, limit: usize) -> String {
    format!("/v1/admin/destinations/{dest}/dead-letters?limit={limit}")
}

/// `POST`: an operator's action on `dest`.
pub fn admin_action(dest: &str, action: AdminAction) -> String {
    format!("/v1/admin/destinations/{dest}/{action}")
}

/// A path segment that names no action of its kind (it came from a
/// client's request: the broker answers 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}")]
pub struct UnknownAction(pub String);

macro_rules! actions {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every action, in declaration order (the tests' table).
            #[cfg(test)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The action's path segment.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                out.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownAction;
            fn from_str(segment: &str) -> Result<Self, UnknownAction> {
                match segment {
                    $($wire => Ok($name::$variant),)*
                    other => Err(UnknownAction(other.to_string())),
                }
            }
        }
    };
}

actions! {
    /// What an exporter does with a lease it holds.
    LeaseAction {
        /// Extend the lease.
        Heartbeat = "heartbeat",
        /// Delivered: move the cursor (and store the poison records as dead letters).
        Commit = "commit",
        /// Not delivered, retryably: counts towards the breaker.
        Fail = "fail",
        /// Given back without a failure (a stop, a long Retry-After).
        Release = "release",
    }
}

actions! {
    /// What an operator does to a destination.
    AdminAction {
        /// Stop handing out leases.
        Pause = "pause",
        /// Hand out leases again after a pause.
        Resume = "resume",
        /// Close the breaker now.
        ResetBreaker = "reset-breaker",
        /// Move the cursors back (or forward) to a target.
        Rewind = "rewind",
        /// Deliver every dead letter again.
        Redrive = "redrive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_back_from_their_path_segments() {
        for a in AdminAction::ALL {
            assert_eq!(a.as_str().parse::<AdminAction>(), Ok(*a));
        }
        for a in LeaseAction::ALL {
            assert_eq!(a.as_str().parse::<LeaseAction>(), Ok(*a));
        }
        assert_eq!("explode".parse::<AdminAction>(), Err(UnknownAction("explode".into())));
    }

    #[test]
    fn builders_fill_the_router_patterns() {
        let fill = |p: &str, vals: &[(&str, &str)]| {
            vals.iter().fold(p.to_string(), |acc, (k, v)| acc.replace(&format!("{{{k}}}"), v))
        };
        assert_eq!(ingest("events"), fill(pattern::INGEST, &[("topic", "events")]));
        assert_eq!(leases("d"), fill(pattern::LEASES, &[("dest", "d")]));
        assert_eq!(
            lease_action("d", "l1", LeaseAction::Commit),
            fill(pattern::LEASE_ACTION, &[("dest", "d"), ("id", "l1"), ("action", "commit")])
        );
        assert_eq!(topics("d"), fill(pattern::TOPICS, &[("dest", "d")]));
        assert_eq!(destinations(), pattern::DESTINATIONS);
        assert_eq!(destination("d"), fill(pattern::DESTINATION, &[("dest", "d")]));
        assert!(dead_letters("d", 5).starts_with(&fill(pattern::DEAD_LETTERS, &[("dest", "d")])));
        assert_eq!(
            admin_action("d", AdminAction::ResetBreaker),
            fill(pattern::ADMIN_ACTION, &[("dest", "d"), ("action", "reset-breaker")])
        );
    }
}
