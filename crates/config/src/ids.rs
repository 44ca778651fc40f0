//! Typed ids of tenants and destinations that stay valid across a
//! configuration reload.
//!
//! A tenant or destination is named in the file; the running broker
//! refers to it by an id handed out the first time its name is seen and
//! kept for the life of the process, whatever the file's order becomes. A
//! tenant removed by a reload keeps its id (its name is remembered), so a
//! later reload that adds it back gets the same one; nothing refers to a
//! position in the file's tables.
//!
//! Invariant: one name, one id; ids are dense from 0 and never reused.
//! Bound: at most [`MAX_IDS`] names of each kind over a process's life,
//! so per-id tables stay bounded.

use std::collections::HashMap;

/// The most tenant (and destination) names one process hands ids to.
pub const MAX_IDS: usize = 1 << 20;

/// A tenant, by the id its name was given ([`Ids`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(u32);

/// A destination, by the id its name was given ([`Ids`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationId(u32);

impl TenantId {
    /// The id as a table index (ids are dense from 0).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl DestinationId {
    /// The id as a table index (ids are dense from 0).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// More names than [`MAX_IDS`] were seen over this process's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {MAX_IDS} tenant or destination names over this process's life: restart the broker")]
pub struct IdsExhausted;

/// The ids of one configuration's tenants and destinations, in the file's
/// order (parallel to `tenants` and `destinations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Each tenant's id, in `tenants` order.
    pub tenants: Vec<TenantId>,
    /// Each destination's id, in `destinations` order.
    pub destinations: Vec<DestinationId>,
}

/// Names to ids, growing only.
#[derive(Debug, Default)]
pub struct Ids {
    tenants: HashMap<String, TenantId>,
    destinations: HashMap<String, DestinationId>,
}

fn id_of(table: &mut HashMap<String, u32>, name: &str) -> Result<u32, IdsExhausted> {
    if let Some(&id) = table.get(name) {
        return Ok(id);
    }
    if table.len() >= MAX_IDS {
        return Err(IdsExhausted);
    }
    let id = u32::try_from(table.len()).map_err(|_| IdsExhausted)?;
    table.insert(name.to_string(), id);
    Ok(id)
}

impl Ids {
    /// The ids of `tenants` and `destinations` (names, in the file's
    /// order): a name seen before keeps its id, a new one gets the next.
    /// On [`IdsExhausted`] nothing is assigned.
    pub fn assign<'a>(
        &mut self,
        tenants: impl IntoIterator<Item = &'a str>,
        destinations: impl IntoIterator<Item = &'a str>,
    ) -> Result<Assigned, IdsExhausted> {
        let mut tenant_table: HashMap<String, u32> = self.tenants.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        let mut dest_table: HashMap<String, u32> = self.destinations.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        let tenant_ids =
            tenants.into_iter().map(|n| id_of(&mut tenant_table, n).map(TenantId)).collect::<Result<Vec<_>, _>>()?;
        let dest_ids = destinations
            .into_iter()
            .map(|n| id_of(&mut dest_table, n).map(DestinationId))
            .collect::<Result<Vec<_>, _>>()?;
        self.tenants = tenant_table.into_iter().map(|(k, v)| (k, TenantId(v))).collect();
        self.destinations = dest_table.into_iter().map(|(k, v)| (k, DestinationId(v))).collect();
        Ok(Assigned { tenants: tenant_ids, destinations: dest_ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_id_across_reorders_removals_and_returns() {
        let mut ids = Ids::default();
        let first = ids.assign(["a", "b", "c"], ["d1"]).unwrap();
        assert_eq!(first.tenants, [TenantId(0), TenantId(1), TenantId(2)]);
        let second = ids.assign(["c", "new", "a"], ["d2", "d1"]).unwrap();
        assert_eq!(second.tenants, [TenantId(2), TenantId(3), TenantId(0)]);
        assert_eq!(second.destinations, [DestinationId(1), DestinationId(0)]);
        let third = ids.assign(["b"], ["d1"]).unwrap();
        assert_eq!(third.tenants, [TenantId(1)], "a removed name is remembered");
    }
}
