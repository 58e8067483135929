//! The configuration currently in force, swapped atomically on reload.
//!
//! Decisions load it without locking; a reload replaces the whole compiled config at once,
//! so a decision never sees half of an update.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::CompiledConfig;

pub type SharedConfig = Arc<ArcSwap<CompiledConfig>>;

pub fn shared(config: CompiledConfig) -> SharedConfig {
    Arc::new(ArcSwap::from_pointee(config))
}
