//! The Consul KV test server's own tests.
