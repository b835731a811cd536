//! Patterns: the `M` namespace, `kind_of`, `is_pattern`, `matches` and
//! `must_match`, with Endo's limits and failure messages.
//!
//! A pattern is a passable. Keys match values equal to them; arrays,
//! records and copyMaps holding matchers are patterns; matchers are tagged
//! values (`match:<name>`). Matching follows `@endo/patterns` step by step
//! (which checks run, in which order, with which message), because the
//! messages are part of the contract with people and with Endo peers.
//!
//! The public entry points are here; the engine behind them is split by
//! what it owns:
//!
//! - `builders`: the [`M`] namespace, which builds matchers;
//! - `kinds`: [`Kind`] and `kind_of`, including the shapes of guards;
//! - `limits`: Endo's size [`Limits`] and the nesting bound;
//! - `matcher`: the matching engine, its memo of well-formed values, and
//!   structural patterns (copyArray, copyRecord, copyMap, keys);
//! - `well_formed`: checking a matcher's own payload;
//! - `match_helpers`: what each `match:*` matcher accepts;
//! - `failure`: why a check failed and how its message reads.

mod builders;
mod failure;
mod kinds;
mod limits;
mod match_helpers;
mod matcher;
mod well_formed;

use crate::rejection::Rejection;
use crate::value::Value;

pub use self::builders::M;
use self::failure::{Failure, Reject};
pub use self::kinds::Kind;
pub use self::limits::{DEFAULT_MAX_NESTING, Limits, nesting_exceeds};
use self::matcher::Matcher;

/// The kind of a value, or `None` for a tagged value that is not a
/// recognised, well-formed kind.
pub fn kind_of(value: &Value) -> Option<Kind<'_>> {
    Matcher::new().confirm_kind_of(value, Reject::Quiet).ok().flatten()
}

/// Whether a value is a pattern.
pub fn is_pattern(value: &Value) -> bool {
    Matcher::new().confirm_pattern(value, Reject::Quiet).is_ok()
}

/// Checks that a value is a pattern, saying what is wrong.
pub fn assert_pattern(value: &Value) -> Result<(), Rejection> {
    let matcher = Matcher::new();
    matcher.check_depth(value, "pattern")?;
    matcher
        .confirm_pattern(value, Reject::Explain)
        .map_err(Failure::into_rejection)
}

/// Whether `specimen` matches `pattern`. A malformed pattern is an error,
/// not a mismatch.
pub fn matches(specimen: &Value, pattern: &Value) -> Result<bool, Rejection> {
    let matcher = Matcher::new();
    matcher.check_depth(pattern, "pattern")?;
    matcher.check_depth(specimen, "specimen")?;
    match matcher.confirm_matches(specimen, pattern, Reject::Quiet) {
        Ok(()) => Ok(true),
        Err(Failure::Mismatch(_)) => Ok(false),
        Err(Failure::Thrown(message)) => Err(Rejection::new(message)),
    }
}

/// Checks that `specimen` matches `pattern`; on failure the message is
/// Endo's, prefixed by `label` when one is given (Endo writes a numeric
/// label as `[n]`; pass it formatted so).
pub fn must_match(specimen: &Value, pattern: &Value, label: Option<&str>) -> Result<(), Rejection> {
    let matcher = Matcher::new();
    matcher.check_depth(pattern, "pattern")?;
    matcher.check_depth(specimen, "specimen")?;
    let outcome = matcher.confirm_matches(specimen, pattern, Reject::Explain);
    let outcome = match label {
        Some(label) => outcome.map_err(|failure| failure.labeled(label)),
        None => outcome,
    };
    outcome.map_err(Failure::into_rejection)
}

/// The one check [`must_match`] makes of a specimen against `M.any()`:
/// that it nests within the bound.
pub(crate) fn check_specimen_depth(specimen: &Value) -> Result<(), Rejection> {
    // What `Matcher::check_depth` checks, without making a matcher.
    matcher::check_nesting(specimen, DEFAULT_MAX_NESTING, "specimen")
}

/// [`check_specimen_depth`] of the array of `items`, without making it.
pub(crate) fn check_items_depth(items: &[Value]) -> Result<(), Rejection> {
    let within = match DEFAULT_MAX_NESTING.checked_sub(1) {
        Some(inner) => items.iter().all(|item| !limits::nesting_exceeds(item, inner)),
        None => items.is_empty(),
    };
    if within {
        Ok(())
    } else {
        Err(Rejection::new(format!(
            "specimen nesting must not be deeper than {DEFAULT_MAX_NESTING}"
        )))
    }
}

/// Whether `pattern` is within the depth bound that [`must_match`] checks
/// patterns against (a guard checks its patterns once, when it is made).
pub(crate) fn pattern_within_bounds(pattern: &Value) -> bool {
    Matcher::new().check_depth(pattern, "pattern").is_ok()
}

/// [`must_match`] for a pattern [`pattern_within_bounds`] accepted, with
/// the label made only on failure: a method guard's check on every call.
pub(crate) fn must_match_bounded_pattern(
    specimen: &Value,
    pattern: &Value,
    label: impl FnOnce() -> String,
) -> Result<(), Rejection> {
    let matcher = Matcher::new();
    matcher.check_depth(specimen, "specimen")?;
    matcher
        .confirm_matches(specimen, pattern, Reject::Explain)
        .map_err(|failure| failure.labeled(&label()).into_rejection())
}
