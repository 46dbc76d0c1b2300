//! The integration suite in one binary: each module is one area of the proxy, driven over the
//! wire against the in-crate HubSpot stand-in (src/sandbox) on loopback. Worlds come from
//! `support::World::build()`; the proxy runs in-process through `hubspot_auth_proxy::start`
//! (one call site, in support/proxy.rs) unless a test needs the binary: signals, exit codes,
//! log lines, CLI flags or process environment (`Run::process()`).

mod support;

mod access;
mod bodies;
mod cli;
mod core;
mod demo;
mod deploy;
mod fleet;
mod fleet_budget;
mod fleet_tokens;
mod legacy;
mod migration;
mod oauth;
mod observability;
mod pooling;
mod portal;
mod ratelimit;
mod recycling;
