//! Integration tests: one binary (`autotests = false`), run by `scripts/test.sh` against a real
//! PostgreSQL and a real SeaweedFS S3 server that the script starts. Each test gets its own
//! database and its own bucket, so tests run in parallel.

mod audit;
mod behaviour;
mod checker;
mod clocks;
mod crash;
mod daemon;
mod database_links;
mod deploy;
mod edges;
mod faults;
mod front_door;
mod helpers;
mod holds;
mod hostile;
mod local;
mod mlflow;
mod names;
mod ownership;
mod packs;
mod permissions;
mod pgbouncer;
mod pipeline;
mod report;
mod requests;
mod security;
mod side_by_side;
mod specs;
mod starvation;
mod storage;
mod tls;
mod verify;
