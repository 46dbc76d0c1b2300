//! The integration suite in one binary: each module is one area of the proxy, driven through
//! the real server against the in-crate HubSpot stand-in (src/sandbox) on loopback.

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
mod portal;
mod ratelimit;
mod recycling;
