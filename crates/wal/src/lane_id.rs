//! Lane names: one lane per (priority, shard), written `normal/3`.

use std::fmt;
use std::str::FromStr;

/// A lane's priority: exporters drain high before normal before low. The
/// discriminant is the byte stored in segment headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Drained first.
    High = 0,
    /// The default.
    Normal = 1,
    /// Drained last.
    Low = 2,
}

impl Priority {
    /// Drain order: high first, low last.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The name used in lane names and directories (`high`, `normal`, `low`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub(crate) fn from_index(index: u8) -> Option<Priority> {
        Priority::ALL.get(usize::from(index)).copied()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A priority or lane name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseLaneError {
    /// Not `high`, `normal` or `low`.
    #[error("unknown priority {0:?} (expected high, normal or low)")]
    Priority(String),
    /// Not `PRIORITY/SHARD`.
    #[error("lane {0:?} is not PRIORITY/SHARD")]
    Shape(String),
    /// The shard is not a number below 65536.
    #[error("lane {0:?} has a bad shard number")]
    Shard(String),
}

impl FromStr for Priority {
    type Err = ParseLaneError;
    fn from_str(name: &str) -> Result<Self, ParseLaneError> {
        match name {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(ParseLaneError::Priority(other.to_string())),
        }
    }
}

/// One lane: a (priority, shard) pair, written `normal/3`. Ordered in
/// drain order (priority, then shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaneId {
    /// The lane's priority.
    pub priority: Priority,
    /// The shard within the priority.
    pub shard: u16,
}

impl LaneId {
    /// The lane `priority/shard`.
    pub const fn new(priority: Priority, shard: u16) -> Self {
        LaneId { priority, shard }
    }
}

impl fmt::Display for LaneId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.priority, self.shard)
    }
}

impl FromStr for LaneId {
    type Err = ParseLaneError;
    fn from_str(name: &str) -> Result<Self, ParseLaneError> {
        let (priority, shard) = name.split_once('/').ok_or_else(|| ParseLaneError::Shape(name.to_string()))?;
        let shard = shard.parse().map_err(|_| ParseLaneError::Shard(name.to_string()))?;
        Ok(LaneId { priority: priority.parse()?, shard })
    }
}
