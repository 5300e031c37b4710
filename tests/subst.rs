//! `stencil subst`: byte-for-byte GNU envsubst, and the extensions.
