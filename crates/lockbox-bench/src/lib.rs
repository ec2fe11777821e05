//! The measuring engines behind `lockbox-bench` and `lockbox bench vault`.
//!
//! Does: drive load on a running fleet through its gateway ([`load`]) and measure what one core
//! of a vault node can do with the network and the log taken away ([`ceiling`]), in the same
//! run, so results are ratios on the same machine.
//! Does not: assert any speed (a benchmark reports; tests never time anything), or create the
//! fleet it measures (`lockbox dev cluster --bench` does).
//! Trusts: the fleet's pins in the device config it is given, like any device.
#![forbid(unsafe_code)]

pub mod ceiling;
pub mod load;
