//! stencil's integration tests: one binary, the real `stencil` executable.

mod support;

mod aliases;
mod bad_input;
mod bench_servers;
mod cli;
mod consul;
mod consul_server;
mod convert;
mod edges;
mod etcd;
mod etcd_cluster;
mod examples;
mod exec;
mod limits;
mod package;
mod reliability;
mod render;
mod rollback;
mod secrets;
mod services;
mod shape;
mod snapshot;
mod subst;
mod vars;
mod watch;
