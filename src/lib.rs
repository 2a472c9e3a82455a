//! Capstan: a durable job engine for the worker-node lifecycle of Cluster API clusters on
//! OpenStack. See ARCHITECTURE.md for the map; `main.rs` only wires.

pub mod api;
pub mod bench;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod duration;
pub mod engine;
pub mod ipv4;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod portal;
pub mod serve;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod tls;
