//! lethe: a retention-and-deletion scheduler. It purges the subjects a job spec says are past
//! their window from PostgreSQL and object storage, skips every held one, and records each purge
//! and each exception in a hash-chained audit log.
//!
//! Dependencies point one way: `domain ← spec, storage ← db ← pipeline ← daemon ← cli`.

pub mod anchor;
pub mod audit;
pub mod cli;
pub mod config;
pub mod context;
pub mod controls;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod domain;
pub mod export;
pub mod pipeline;
pub mod report;
pub mod spec;
pub mod storage;
