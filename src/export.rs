//! `lethe request export`.

use crate::context::Context;
use crate::spec::Job;
use anyhow::{Result, bail};

pub async fn run(
    _ctx: &Context,
    _jobs: &[Job],
    _account: &str,
    _out: &str,
    _reason: &str,
    _by: &str,
    _force: bool,
) -> Result<u8> {
    bail!("export: in progress")
}
