//! Whether a matcher's own payload is well formed (`match:*` tags with
//! the payload shape Endo expects). Endo checks these with a throwing
//! rejector, so a malformed matcher is an error, not a mismatch.

use crate::collections::check_key;
use crate::quote::quote;
use crate::value::{PassStyle, Value};
use crate::{list, record};

use super::builders::M;
use super::failure::{Failure, Label, Outcome, Reject, qp, s};
use super::matcher::Matcher;

impl Matcher {
    pub(super) fn confirm_well_formed(&self, tag: &str, payload: &Value, reject: Reject) -> Outcome {
        let patterns2 = || list![M::pattern(), M::pattern()];
        match tag {
            "match:any" | "match:scalar" | "match:key" | "match:pattern" => {
                if payload.is_undefined() {
                    Ok(())
                } else {
                    reject.fail_thrown(|| format!("match:any payload: {} - Must be undefined", quote(payload)))
                }
            }
            "match:and" | "match:or" => {
                let Some(patterns) = payload.as_array() else {
                    return reject.fail_thrown(|| format!("Needs array of sub-patterns: {}", qp(payload)));
                };
                patterns
                    .iter()
                    .try_for_each(|pattern| self.confirm_pattern(pattern, reject))
            }
            "match:not" => self.confirm_pattern(payload, reject),
            "match:kind" => {
                if payload.as_str().is_some() {
                    Ok(())
                } else {
                    reject.fail_thrown(|| {
                        format!("match:kind: payload: {} - A kind name must be a string", quote(payload))
                    })
                }
            }
            "match:tagged" => self.confirm_nested(payload, &patterns2(), Label::Text("match:tagged payload"), reject),
            "match:bigint" | "match:nat" | "match:string" | "match:symbol" | "match:byteArray" => {
                self.confirm_well_formed_with_limit(payload, &list![], &format!("{tag} payload"), reject)
            }
            "match:remotable" | "match:promise" => self.confirm_nested(
                payload,
                &record! { "label" => M::string() },
                Label::Text(&format!("{tag} payload")),
                reject,
            ),
            "match:lt" | "match:lte" | "match:gte" | "match:gt" => match check_key(payload) {
                Ok(()) => Ok(()),
                Err(rejection) => reject.fail_thrown(|| rejection.message),
            },
            "match:recordOf" | "match:bagOf" | "match:mapOf" => {
                self.confirm_well_formed_with_limit(payload, &patterns2(), &format!("{tag} payload"), reject)
            }
            "match:arrayOf" | "match:setOf" => {
                self.confirm_well_formed_with_limit(payload, &list![M::pattern()], &format!("{tag} payload"), reject)
            }
            "match:containerHas" => self.confirm_well_formed_with_limit(
                payload,
                &list![M::pattern(), M::gte(Value::bigint(1))],
                "M.containerHas payload",
                reject,
            ),
            "match:splitArray" => self.confirm_split_well_formed(payload, PassStyle::CopyArray, "array", reject),
            "match:splitRecord" => self.confirm_split_well_formed(payload, PassStyle::CopyRecord, "record", reject),
            _ => reject.fail_thrown(|| format!("cannot check unrecognized tag {}", s(tag))),
        }
    }

    fn confirm_well_formed_with_limit(
        &self,
        payload: &Value,
        main_shape: &Value,
        prefix: &str,
        reject: Reject,
    ) -> Outcome {
        let Some(items) = payload.as_array() else {
            return reject.fail_thrown(|| format!("{} payload must be an array: {}", s(prefix), quote(payload)));
        };
        let main_length = main_shape.as_array().map_or(0, <[Value]>::len);
        if items.len() != main_length && items.len() != main_length + 1 {
            return reject.fail_thrown(|| format!("{} payload unexpected size: {}", s(prefix), quote(payload)));
        }
        let main = Value::array(items.iter().take(main_length).cloned());
        self.confirm_nested(&main, main_shape, Label::Text(prefix), reject)?;
        let limits = match items.get(main_length) {
            None | Some(Value::Undefined) => return Ok(()),
            Some(limits) => limits,
        };
        let Some(record) = limits.as_record() else {
            return reject.fail_thrown(|| format!("Limits must be a record: {}", quote(limits)));
        };
        for (name, value) in record.iter() {
            if !matches!(value, Value::Number(_)) {
                return reject.fail_thrown(|| format!("Value of limit {} but be a number: {}", s(name), quote(value)));
            }
        }
        Ok(())
    }

    fn confirm_split_well_formed(
        &self,
        payload: &Value,
        part_style: PassStyle,
        part_name: &str,
        reject: Reject,
    ) -> Outcome {
        let complaint = || {
            format!(
                "Must be an array of a requiredPatt {part_name}, an optional optionalPatt {part_name}, and an optional restPatt: {}",
                quote(payload)
            )
        };
        let Some(parts) = payload.as_array().filter(|parts| (1..=3).contains(&parts.len())) else {
            return reject.fail_thrown(complaint);
        };
        let part_ok =
            |part: &Value| -> Result<bool, Failure> { Ok(self.is_pattern(part)? && part.pass_style() == part_style) };
        let well_formed = part_ok(&parts[0])?
            && match parts.get(1) {
                None | Some(Value::Undefined) => true,
                Some(optional) => part_ok(optional)?,
            }
            && match parts.get(2) {
                None | Some(Value::Undefined) => true,
                Some(rest) => self.is_pattern(rest)?,
            };
        if well_formed {
            Ok(())
        } else {
            reject.fail_thrown(complaint)
        }
    }
}
