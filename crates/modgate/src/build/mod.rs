//! Builders: the file format (`config`) turned into the runtime values requests use, so runtime
//! types never import the format (docs/architecture.md, "Floors of the binary crate"). The
//! model as a whole is built by `model.rs` and `gateway.rs`; this holds the builders that
//! other floors share (an upstream peer, also for `agent` and `warm`; TCP keepalive).

pub mod upstream;
