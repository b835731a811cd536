//! Kinds: a value's pass style, or the tag of a recognised, well-formed
//! tagged value (matchers, copy collections, guards), and the checks that
//! a specimen has a given kind.

use std::sync::{Arc, OnceLock};

use crate::collections::{check_collection, is_key};
use crate::order::{KeyOrder, compare_keys};
use crate::quote::{bare, quote};
use crate::record;
use crate::value::{PassStyle, Value};

use super::builders::M;
use super::failure::{Failure, Label, Outcome, Reject, nested, s};
use super::matcher::Matcher;

/// The kind of a value: its pass style, or for a recognised and
/// well-formed tagged value its tag (`copySet`, `match:string`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Style(PassStyle),
    Tag(&'a str),
}

impl<'a> Kind<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Kind::Style(style) => style.name(),
            Kind::Tag(tag) => tag,
        }
    }
}

/// Guard payload shapes, so that guards have kinds as Endo gives them.
fn guard_payload_shape(tag: &str) -> Option<&'static Value> {
    static SHAPES: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    let shapes = SHAPES.get_or_init(|| {
        let sync_value_guard = M::or([M::kind("guard:rawGuard"), M::pattern()]);
        let sync_value_guard_list = M::array_of(sync_value_guard.clone(), None);
        let arg_guard_list = M::array_of(
            M::or([M::kind("guard:rawGuard"), M::kind("guard:awaitArgGuard"), M::pattern()]),
            None,
        );
        let method_payload = |call_kind: &str, arg_guards: Value| {
            record! {
                "callKind" => call_kind,
                "argGuards" => arg_guards.clone(),
                "optionalArgGuards" => M::opt(arg_guards),
                "restArgGuard" => M::opt(sync_value_guard.clone()),
                "returnGuard" => sync_value_guard.clone(),
            }
        };
        vec![
            ("guard:awaitArgGuard", record! { "argGuard" => M::pattern() }),
            ("guard:rawGuard", M::record()),
            (
                "guard:methodGuard",
                M::or([
                    method_payload("sync", sync_value_guard_list.clone()),
                    method_payload("async", arg_guard_list),
                ]),
            ),
            (
                "guard:interfaceGuard",
                M::split_record(
                    record! {
                        "interfaceName" => M::string(),
                        "methodGuards" => M::record_of(M::string(), M::kind("guard:methodGuard"), None),
                    },
                    Some(record! {
                        "defaultGuards" => M::or([M::undefined(), Value::from("passable"), Value::from("raw")]),
                        "sloppy" => M::boolean(),
                        "symbolMethodGuards" => M::map_of(M::symbol(), M::kind("guard:methodGuard"), None),
                    }),
                    None,
                ),
            ),
        ]
    });
    shapes.iter().find(|(name, _)| *name == tag).map(|(_, shape)| shape)
}

const MATCH_TAGS: [&str; 28] = [
    "match:any",
    "match:and",
    "match:or",
    "match:not",
    "match:scalar",
    "match:key",
    "match:pattern",
    "match:kind",
    "match:tagged",
    "match:bigint",
    "match:nat",
    "match:string",
    "match:symbol",
    "match:remotable",
    "match:promise",
    "match:lt",
    "match:lte",
    "match:gte",
    "match:gt",
    "match:arrayOf",
    "match:byteArray",
    "match:recordOf",
    "match:setOf",
    "match:bagOf",
    "match:containerHas",
    "match:mapOf",
    "match:splitArray",
    "match:splitRecord",
];

pub(super) fn is_match_tag(tag: &str) -> bool {
    tag.starts_with("match:") && MATCH_TAGS.contains(&tag)
}

impl Matcher {
    pub(super) fn confirm_kind_of<'v>(&self, value: &'v Value, reject: Reject) -> Result<Option<Kind<'v>>, Failure> {
        let Value::Tagged(tagged) = value else {
            return Ok(Some(Kind::Style(value.pass_style())));
        };
        let address = Arc::as_ptr(tagged) as *const () as usize;
        if self.well_formed.borrow().contains_key(&address) {
            return Ok(Some(Kind::Tag(&tagged.tag)));
        }
        match self.confirm_tagged(value, &tagged.tag, &tagged.payload, reject) {
            Ok(()) => {
                self.well_formed.borrow_mut().insert(address, value.clone());
                Ok(Some(Kind::Tag(&tagged.tag)))
            }
            Err(Failure::Mismatch(None)) => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    fn confirm_tagged(&self, tagged: &Value, tag: &str, payload: &Value, reject: Reject) -> Outcome {
        if is_match_tag(tag) {
            return self.confirm_well_formed(tag, payload, reject);
        }
        if let Some(shape) = guard_payload_shape(tag) {
            return nested(Label::Text(tag), || self.confirm_matches(payload, shape, reject));
        }
        match tag {
            "copySet" | "copyBag" | "copyMap" => match check_collection(tagged) {
                Ok(_) => Ok(()),
                Err(rejection) => reject.fail_thrown(|| rejection.message),
            },
            _ => reject.fail_thrown(|| format!("cannot check unrecognized tag {}: {}", s(tag), quote(tagged))),
        }
    }

    pub(super) fn is_kind(&self, value: &Value, kind: &str) -> Result<bool, Failure> {
        match self.confirm_kind(value, kind, Reject::Quiet) {
            Ok(()) => Ok(true),
            Err(Failure::Mismatch(_)) => Ok(false),
            Err(failure) => Err(failure),
        }
    }

    pub(super) fn confirm_kind(&self, specimen: &Value, kind: &str, reject: Reject) -> Outcome {
        match kind {
            "null" => return self.confirm_as_key_pattern(specimen, &Value::Null, reject),
            "undefined" => return self.confirm_as_key_pattern(specimen, &Value::Undefined, reject),
            _ => {}
        }
        let real_kind = self.confirm_kind_of(specimen, reject)?;
        if real_kind.is_some_and(|real| real.name() == kind) {
            return Ok(());
        }
        reject.fail(|| {
            format!(
                "{} {} - Must be a {}",
                bare(real_kind.map_or("unknown", |real| real.name())),
                quote(specimen),
                bare(kind)
            )
        })
    }

    pub(super) fn is_undefined_pattern(&self, pattern: &Value) -> Result<bool, Failure> {
        Ok(pattern.is_undefined()
            || (self.is_kind(pattern, "match:kind")?
                && pattern.as_tagged().and_then(|t| t.payload.as_str()) == Some("undefined")))
    }

    pub(super) fn confirm_as_key_pattern(&self, specimen: &Value, key: &Value, reject: Reject) -> Outcome {
        if is_key(specimen)
            && let KeyOrder::Equal = compare_keys(specimen, key)?
        {
            return Ok(());
        }
        reject.fail(|| format!("{} - Must be: {}", quote(specimen), quote(key)))
    }
}
