//! Lane names: one lane per (priority, shard), written `normal/3`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    High = 0,
    Normal = 1,
    Low = 2,
}

impl Priority {
    /// Drain order: high first, low last.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn from_index(i: u8) -> Option<Priority> {
        Priority::ALL.get(usize::from(i)).copied()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!("unknown priority {other:?} (expected high, normal or low)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaneId {
    pub priority: Priority,
    pub shard: u16,
}

impl LaneId {
    pub fn new(priority: Priority, shard: u16) -> Self {
        LaneId { priority, shard }
    }
}

impl fmt::Display for LaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.priority, self.shard)
    }
}

impl FromStr for LaneId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (p, shard) = s.split_once('/').ok_or_else(|| format!("lane {s:?} is not PRIORITY/SHARD"))?;
        let shard = shard.parse().map_err(|_| format!("lane {s:?} has a bad shard number"))?;
        Ok(LaneId { priority: p.parse()?, shard })
    }
}
