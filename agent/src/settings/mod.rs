//! The agent's settings: the model (what can be configured), rpcapd.ini
//! (`ini`, a table of keys), the flags (`cli`), the value parsers both share
//! (`values`) and `--check-config`'s output (`render`).
//!
//! The bottom layer: settings import nothing from capture, datapath,
//! session, host or control; those take their values from here.

pub mod cli;
pub mod ini;
pub mod model;
mod render;
pub mod tunnel;
pub mod values;

pub use ini::{ConfigError, Diag, LoadError, Loaded, Parsed};
pub use model::*;
