//! Streaming runtime with Apache Flink's model of time.
#![warn(missing_docs)]

pub mod error;
pub mod operator;
pub mod process;
pub mod state;
pub mod time;
pub mod timers;
pub mod window;
