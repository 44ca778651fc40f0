//! Every `reason` label Weir's metrics carry, named once. A call site
//! counts a [`Reason`], never a string literal, so a dashboard's reason is
//! a name this table holds, and every series of a reason metric can exist
//! at 0 from start ([`Reason::HTTP_REFUSED`], [`Reason::SHED`],
//! [`Reason::DEMOTED`]). docs/operations.md lists them.

/// A reason label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `weir_http_refused_total`: the listener's connection cap.
    Connections,
    /// The cap on connections that have not sent a whole request head.
    Pending,
    /// A silent pending connection evicted for a new one.
    Evicted,
    /// No byte within `first_byte_timeout_ms`.
    FirstByteTimeout,
    /// No whole head within the head timeout of a new connection.
    FirstHeadTimeout,
    /// One tenant's connections (`max_connections_per_tenant`).
    ConnectionsTenant,
    /// All tenants' connections together.
    ConnectionsTenants,
    /// Exporters' connections.
    ConnectionsExporter,
    /// Connections with no valid token.
    ConnectionsAnonymous,
    /// Admin and health connections.
    ConnectionsControl,
    /// One peer address's connections (`max_connections_per_peer`).
    ConnectionsPeer,
    /// The memory budget of bodies in flight.
    Memory,
    /// One tenant's share of the memory budget.
    MemoryTenantShare,
    /// A tenant's idempotency keys inside the window.
    IdempotencyKeys,
    /// `weir_backpressure_shed_total`: the WAL's disk quota.
    DiskQuota,
    /// The data disk's high watermark.
    DiskWatermark,
    /// A destination the data goes to is over its lag limit.
    DestinationLag,
    /// The tenant's hard rate.
    HardRateLimit,
    /// `weir_demoted_records_total`: over the tenant's rate.
    OverRate,
    /// The limiter could not be read in time (demoted on doubt).
    LimiterContention,
    /// The clock went backwards (demoted on doubt).
    LimiterClock,
}

impl Reason {
    /// Reasons of `weir_http_refused_total{reason}`.
    pub const HTTP_REFUSED: [Reason; 14] = [
        Reason::Connections,
        Reason::Pending,
        Reason::Evicted,
        Reason::FirstByteTimeout,
        Reason::FirstHeadTimeout,
        Reason::ConnectionsTenant,
        Reason::ConnectionsTenants,
        Reason::ConnectionsExporter,
        Reason::ConnectionsAnonymous,
        Reason::ConnectionsControl,
        Reason::ConnectionsPeer,
        Reason::Memory,
        Reason::MemoryTenantShare,
        Reason::IdempotencyKeys,
    ];

    /// Reasons of `weir_backpressure_shed_total{tenant,reason}`.
    pub const SHED: [Reason; 4] =
        [Reason::DiskQuota, Reason::DiskWatermark, Reason::DestinationLag, Reason::HardRateLimit];

    /// Reasons of `weir_demoted_records_total{tenant,reason}`.
    pub const DEMOTED: [Reason; 3] = [Reason::OverRate, Reason::LimiterContention, Reason::LimiterClock];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Connections => "connections",
            Reason::Pending => "pending",
            Reason::Evicted => "evicted",
            Reason::FirstByteTimeout => "first_byte_timeout",
            Reason::FirstHeadTimeout => "first_head_timeout",
            Reason::ConnectionsTenant => "connections_tenant",
            Reason::ConnectionsTenants => "connections_tenants",
            Reason::ConnectionsExporter => "connections_exporter",
            Reason::ConnectionsAnonymous => "connections_anonymous",
            Reason::ConnectionsControl => "connections_control",
            Reason::ConnectionsPeer => "connections_peer",
            Reason::Memory => "memory",
            Reason::MemoryTenantShare => "memory_tenant_share",
            Reason::IdempotencyKeys => "idempotency_keys",
            Reason::DiskQuota => "disk_quota",
            Reason::DiskWatermark => "disk_watermark",
            Reason::DestinationLag => "destination_lag",
            Reason::HardRateLimit => "hard_rate_limit",
            Reason::OverRate => "over_rate",
            Reason::LimiterContention => "limiter_contention",
            Reason::LimiterClock => "limiter_clock",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;
    use std::collections::HashSet;

    #[test]
    fn every_reason_is_in_one_metric_list_and_every_label_is_distinct() {
        let all: Vec<Reason> =
            Reason::HTTP_REFUSED.iter().chain(&Reason::SHED).chain(&Reason::DEMOTED).copied().collect();
        let labels: HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), all.len(), "a label named twice");
        assert_eq!(all.len(), 21, "a reason missing from every list");
        assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
