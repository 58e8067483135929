//! The slot of a slotted window (`precision_ms`): which slots a window accepts and the one it
//! gets when none is written.
//!
//! A window of W ms is cut into W / g slots of g ms. Fewer than [`MIN_SLOTS`] would make the
//! oldest slot, which a slotted counter counts whole, a large part of the window (many early
//! denials); more than [`MAX_SLOTS`] would make the counter's memory grow for little gain
//! (its Redis hash must stay small).

/// The fewest slots a window may have.
pub const MIN_SLOTS: u64 = 10;
/// The most slots a window may have.
pub const MAX_SLOTS: u64 = 120;
/// The number of slots the default aims at.
pub const DEFAULT_SLOTS: u64 = 60;

/// The slot (ms) of a slotted window of `window_seconds` without `precision_ms`: W / 60 when
/// that is a whole number of ms; otherwise, among the slots of whole ms that divide W into
/// [`MIN_SLOTS`]..=[`MAX_SLOTS`] slots, the one nearest to W / 60 (a tie goes to the shorter
/// slot). There always is one: W / 10 is 100 ms × `window_seconds`.
pub fn default_precision_ms(window_seconds: u64) -> u64 {
    let window_ms = window_seconds.saturating_mul(1_000);
    (MIN_SLOTS..=MAX_SLOTS)
        .filter(|&slots| window_ms.is_multiple_of(slots))
        .map(|slots| window_ms / slots)
        // |g − W/60| scaled by 60, to stay in integers.
        .min_by_key(|&slot| (slot.saturating_mul(DEFAULT_SLOTS).abs_diff(window_ms), slot))
        .unwrap_or(window_ms / MIN_SLOTS)
}

/// The slot (ms) a slotted window counts with: the written one, else the default.
pub fn precision_ms(window_seconds: u64, written: Option<u64>) -> u64 {
    written.unwrap_or_else(|| default_precision_ms(window_seconds))
}

/// Checks a written `precision_ms` against its window (whose length is already valid): a
/// whole number of slots, between [`MIN_SLOTS`] and [`MAX_SLOTS`] of them.
pub fn check_precision(window_seconds: u64, precision_ms: u64) -> Result<(), String> {
    let window_ms = window_seconds.saturating_mul(1_000);
    let default = default_precision_ms(window_seconds);
    let hint = format!("the default for a window of {window_seconds} s is {default}");
    if precision_ms == 0 {
        return Err(format!("must be > 0 ({hint})"));
    }
    if !window_ms.is_multiple_of(precision_ms) {
        return Err(format!(
            "must divide the window ({window_ms} ms) into whole slots: {window_ms} / \
             {precision_ms} is not a whole number ({hint})"
        ));
    }
    let slots = window_ms / precision_ms;
    if !(MIN_SLOTS..=MAX_SLOTS).contains(&slots) {
        return Err(format!(
            "must divide the window ({window_ms} ms) into {MIN_SLOTS} to {MAX_SLOTS} slots, got \
             {slots} slots of {precision_ms} ms ({hint})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
