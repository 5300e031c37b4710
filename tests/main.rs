//! stencil's integration tests: one binary, the real `stencil` executable.

mod support;

mod bad_input;
mod bench_servers;
mod cli;
mod consul;
mod consul_server;
mod edges;
mod etcd;
mod examples;
mod exec;
mod package;
mod render;
mod shape;
mod subst;
mod watch;
