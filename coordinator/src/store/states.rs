//! Job and sweep states. In SQLite they are the TEXT of `jobs.state` / `sweeps.state`, spelled
//! as `as_str` gives them (the schema's CHECK constraints list the same strings: a test below
//! keeps them in step, so databases written before these enums open unchanged).
//!
//! The SQL statements of the store name states literally (`WHERE state = 'queued'`), like the
//! schema does; everything on the Rust side (binds, rows, comparisons) uses these enums.

use std::fmt;
use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Sqlite, Type};

/// A stored state string that no state is spelled as.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} state \"{value}\"")]
pub struct UnknownState {
    pub what: &'static str,
    pub value: String,
}

/// Defines a state enum stored as TEXT: `as_str`, `FromStr`, `Display` and sqlx encoding.
macro_rules! text_state {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every state, in the order of the schema's CHECK list.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState { what: $what, value: s.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Type<Sqlite> for $name {
            fn type_info() -> SqliteTypeInfo {
                <str as Type<Sqlite>>::type_info()
            }
            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <&str as Type<Sqlite>>::compatible(ty)
            }
        }

        impl Encode<'_, Sqlite> for $name {
            fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<'_, Sqlite>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Sqlite> for $name {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<'r, Sqlite>>::decode(value)?.parse()?)
            }
        }
    };
}

text_state! {
    /// `jobs.state`.
    JobState, "job" {
        /// Waiting for a worker (new, or put back after a failed or expired attempt).
        Queued => "queued",
        /// Leased to a worker that has not heartbeated yet.
        Leased => "leased",
        /// Its worker has heartbeated.
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl JobState {
    /// Queued or held by a worker: the sweep is not over while one of its jobs is active.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Leased | JobState::Running)
    }

    /// Held by a worker (leased or running): it may heartbeat, complete or fail it.
    pub fn is_held(self) -> bool {
        matches!(self, JobState::Leased | JobState::Running)
    }

    /// Succeeded, failed or cancelled: nothing changes it any more (except a late report,
    /// which makes a failed job succeeded).
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

text_state! {
    /// `sweeps.state`.
    SweepState, "sweep" {
        /// Some of its jobs are active.
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_list(sql: &str, column_start: &str) -> Vec<String> {
        let at = sql.find(column_start).unwrap_or_else(|| panic!("{column_start} in the schema"));
        let rest = &sql[at..];
        let open = rest.find("CHECK (state IN (").expect("a CHECK list") + "CHECK (state IN (".len();
        let close = open + rest[open..].find(')').unwrap();
        rest[open..close].split(',').map(|s| s.trim().trim_matches('\'').to_string()).collect()
    }

    /// The stored spellings are those the schema allows, so old databases keep opening.
    #[test]
    fn states_are_spelled_as_the_schema_checks_them() {
        let sql = include_str!("../../../migrations/0001_init.sql");
        let jobs: Vec<String> = JobState::ALL.iter().map(|s| s.as_str().to_string()).collect();
        let sweeps: Vec<String> = SweepState::ALL.iter().map(|s| s.as_str().to_string()).collect();
        assert_eq!(check_list(sql, "CREATE TABLE jobs"), jobs);
        assert_eq!(check_list(sql, "CREATE TABLE sweeps"), sweeps);
    }

    #[test]
    fn as_str_and_from_str_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), *s);
            assert_eq!(s.to_string(), s.as_str());
        }
        for s in SweepState::ALL {
            assert_eq!(s.as_str().parse::<SweepState>().unwrap(), *s);
        }
        assert_eq!("paused".parse::<JobState>().unwrap_err().to_string(), "unknown job state \"paused\"");
        assert_eq!(JobState::ALL.iter().filter(|s| s.is_active()).count(), 3);
    }
}
