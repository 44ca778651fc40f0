//! Which records of a lease's offset range the lease holds.
//!
//! A lane lease covers `[from, to)` of one lane. Before tenant fairness
//! that meant every routed record of the range. Now a lease is one of:
//! - a **floor lease** ([`Cover::Floor`]): taken at the lane's floor (the
//!   first offset no floor lease handed out), it holds every routed record
//!   of its range except, for each tenant in `skips`, that tenant's records
//!   below the offset given — a tenant lease handed those out already;
//! - a **tenant lease** ([`Cover::Tenant`]): one tenant's routed records of
//!   the range, taken ahead of the floor so a tenant with little waiting is
//!   not queued behind another's backlog.
//!
//! Invariant: the covers of a lane's leases and waiting ranges never share
//! a record. Two floor ranges never overlap; two ranges of one tenant never
//! overlap; a floor range that overlaps a tenant's range skips that tenant
//! over the overlap (`DestState::check_invariants` asserts all three).
//!
//! A cover is stored with its lease record, so a range given back is
//! offered again with exactly the records it held.

use std::sync::Arc;

/// Which records of its range a lease holds (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cover {
    /// Every routed record of the range except each listed tenant's below
    /// its offset; sorted by tenant, each offset inside the range.
    Floor(Arc<[(Arc<str>, u64)]>),
    /// Only this tenant's routed records of the range.
    Tenant(Arc<str>),
}

impl Default for Cover {
    fn default() -> Cover {
        Cover::Floor(Arc::from([]))
    }
}

impl Cover {
    /// Whether the record of `tenant` at `offset` (inside the range) is the lease's.
    pub fn holds(&self, tenant: &str, offset: u64) -> bool {
        match self {
            Cover::Floor(skips) => skip_below(skips, tenant).is_none_or(|until| offset >= until),
            Cover::Tenant(t) => &**t == tenant,
        }
    }

    /// The tenant of a tenant lease.
    pub fn tenant(&self) -> Option<&Arc<str>> {
        match self {
            Cover::Tenant(t) => Some(t),
            Cover::Floor(_) => None,
        }
    }

    /// The same cover for the part of its range at or above `from`:
    /// skips that end at or below it are dropped.
    pub fn above(&self, from: u64) -> Cover {
        match self {
            Cover::Floor(skips) => Cover::Floor(skips.iter().filter(|(_, u)| *u > from).cloned().collect()),
            Cover::Tenant(_) => self.clone(),
        }
    }

    /// The offset below which a floor cover skips `tenant`'s records.
    pub fn skip_of(&self, tenant: &str) -> Option<u64> {
        match self {
            Cover::Floor(skips) => skip_below(skips, tenant),
            Cover::Tenant(_) => None,
        }
    }

    /// The skips as stored (tenant names and offsets).
    pub fn stored_skips(&self) -> Vec<(String, u64)> {
        match self {
            Cover::Floor(skips) => skips.iter().map(|(t, u)| (t.to_string(), *u)).collect(),
            Cover::Tenant(_) => Vec::new(),
        }
    }

    /// The cover a stored lease record describes.
    pub fn from_stored(tenant: Option<&str>, skips: &[(String, u64)]) -> Cover {
        match tenant {
            Some(t) => Cover::Tenant(Arc::from(t)),
            None => {
                let mut s: Vec<(Arc<str>, u64)> = skips.iter().map(|(t, u)| (Arc::from(t.as_str()), *u)).collect();
                s.sort();
                s.dedup_by(|a, b| a.0 == b.0);
                Cover::Floor(s.into())
            }
        }
    }
}

fn skip_below(skips: &[(Arc<str>, u64)], tenant: &str) -> Option<u64> {
    skips.binary_search_by(|(t, _)| (**t).cmp(tenant)).ok().map(|i| skips[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_cover_skips_a_tenant_only_below_its_offset() {
        let c = Cover::from_stored(None, &[("b".into(), 10), ("a".into(), 5)]);
        assert!(!c.holds("a", 4) && c.holds("a", 5));
        assert!(!c.holds("b", 9) && c.holds("b", 10));
        assert!(c.holds("c", 0));
        assert_eq!(c.above(5).stored_skips(), vec![("b".to_string(), 10)]);
        let t = Cover::from_stored(Some("a"), &[]);
        assert!(t.holds("a", 0) && !t.holds("b", 0));
        assert_eq!(t.tenant().map(|t| &**t), Some("a"));
    }
}
