//! The agent's settings: the model (what can be configured), rpcapd.ini
//! (`ini`, a table of keys), the same keys from the environment (`env`,
//! `XRPCAPD_*`), the flags (`cli`), the value parsers all share
//! (`values`) and `--check-config`'s output (`render`).
//!
//! The bottom layer: settings import nothing from capture, datapath,
//! session, host or control; those take their values from here.

pub mod cli;
pub mod env;
pub mod ini;
pub mod model;
mod render;
pub mod tunnel;
pub mod values;

pub use env::Environment;
pub use ini::{Assignment, ConfigError, Diag, LoadError, Loaded, Origin, Parsed};
pub use model::*;
pub use render::Explained;
