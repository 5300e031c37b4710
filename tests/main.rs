//! stencil's integration tests: one binary, the real `stencil` executable.

mod support;

mod cli;
mod examples;
mod render;
mod subst;
