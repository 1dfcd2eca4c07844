//! Request priority and its parsing from the `x-priority` header.

use std::fmt;
use std::str::FromStr;

/// How urgent a request is. Higher variants are served first.
///
/// The ordering is by urgency: `Critical > High > Normal > Low > Batch`.
/// Numeric spellings follow the seed design: `0` is `Critical`, `4` is `Batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// System-level requests (health probes of dependent systems, operators).
    Critical,
    /// Interactive, latency-sensitive traffic of premium tenants.
    High,
    /// Ordinary interactive traffic (the default).
    #[default]
    Normal,
    /// Traffic that tolerates delay.
    Low,
    /// Offline batch jobs; served only when nothing else waits.
    Batch,
}

/// The accepted spellings, for error messages.
pub const ACCEPTED_PRIORITIES: &str =
    "critical, high, normal, low, batch (case-insensitive) or 0-4 (0 = critical)";

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Batch,
    ];

    /// Rank from 0 (`Critical`) to 4 (`Batch`); handy as an array index.
    pub const fn rank(self) -> usize {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
            Priority::Batch => 4,
        }
    }

    /// The priority of a rank (0 = `Critical`); `None` above 4.
    pub const fn from_rank(rank: usize) -> Option<Priority> {
        match rank {
            0 => Some(Priority::Critical),
            1 => Some(Priority::High),
            2 => Some(Priority::Normal),
            3 => Some(Priority::Low),
            4 => Some(Priority::Batch),
            _ => None,
        }
    }

    /// Lower-case name, as used in metric labels and headers.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Batch => "batch",
        }
    }

    /// One level more urgent, saturating at `Critical` (used by queue aging).
    pub const fn promoted(self) -> Priority {
        match self {
            Priority::Critical | Priority::High => Priority::Critical,
            Priority::Normal => Priority::High,
            Priority::Low => Priority::Normal,
            Priority::Batch => Priority::Low,
        }
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Priority {
    /// More urgent compares greater.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.rank().cmp(&self.rank())
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority spelling that is not one of [`ACCEPTED_PRIORITIES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid priority {value:?}: accepted values are {ACCEPTED_PRIORITIES}")]
pub struct ParsePriorityError {
    /// The rejected value (truncated to 64 characters).
    pub value: String,
}

impl FromStr for Priority {
    type Err = ParsePriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let p = match t.to_ascii_lowercase().as_str() {
            "critical" | "0" => Priority::Critical,
            "high" | "1" => Priority::High,
            "normal" | "2" => Priority::Normal,
            "low" | "3" => Priority::Low,
            "batch" | "4" => Priority::Batch,
            _ => {
                return Err(ParsePriorityError {
                    value: t.chars().take(64).collect(),
                })
            }
        };
        Ok(p)
    }
}

impl serde::Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses() {
        for (i, p) in Priority::ALL.iter().enumerate() {
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), *p);
            assert_eq!(p.as_str().to_uppercase().parse::<Priority>().unwrap(), *p);
            assert_eq!(i.to_string().parse::<Priority>().unwrap(), *p);
            assert_eq!(Priority::from_rank(i), Some(*p));
        }
        assert_eq!("  High ".parse::<Priority>().unwrap(), Priority::High);
        assert_eq!("BaTcH".parse::<Priority>().unwrap(), Priority::Batch);
    }

    #[test]
    fn bad_spelling_names_accepted_values() {
        for bad in ["urgent", "5", "-1", "", "normal!"] {
            let err = bad.parse::<Priority>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("critical, high, normal, low, batch"), "{msg}");
            assert!(msg.contains("0-4"), "{msg}");
        }
    }

    #[test]
    fn ordering_is_by_urgency() {
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        assert!(Priority::Low > Priority::Batch);
        assert_eq!(Priority::default(), Priority::Normal);
        assert_eq!(Priority::Batch.promoted(), Priority::Low);
        assert_eq!(Priority::Critical.promoted(), Priority::Critical);
    }
}
