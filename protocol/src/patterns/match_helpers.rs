//! What each `match:*` matcher accepts (Endo's match helpers), with its
//! limits and Endo's failure message for each check.

use std::sync::Arc;

use num_bigint::BigInt;
use num_traits::{Signed, ToPrimitive, Zero};

use crate::collections::{CopyCollection, check_key, check_scalar_key, collection_of};
use crate::list;
use crate::order::{KeyOrder, compare_keys};
use crate::quote::{bare, quote};
use crate::strings::utf16_len;
use crate::value::{PassStyle, Record, Value};

use super::builders::M;
use super::failure::{Failure, Label, Outcome, Reject, nested, number, qp, s};
use super::kind_of;
use super::kinds::Kind;
use super::limits::Limits;
use super::matcher::Matcher;

impl Matcher {
    pub(super) fn confirm_helper(&self, tag: &str, specimen: &Value, payload: &Value, reject: Reject) -> Outcome {
        let items = payload.as_array().unwrap_or_default();
        let limits_at = |index: usize| Limits::from_record(items.get(index));
        match tag {
            "match:any" => Ok(()),
            "match:and" => items
                .iter()
                .try_for_each(|pattern| self.confirm_matches(specimen, pattern, reject)),
            "match:or" => self.match_or(specimen, payload, items, reject),
            "match:not" => {
                if self.matches(specimen, payload)? {
                    reject.fail(|| format!("{} - Must fail negated pattern: {}", quote(specimen), qp(payload)))
                } else {
                    Ok(())
                }
            }
            "match:scalar" => match check_scalar_key(specimen) {
                Ok(()) => Ok(()),
                Err(rejection) => reject.fail(|| rejection.message),
            },
            "match:key" => match check_key(specimen) {
                Ok(()) => Ok(()),
                Err(rejection) => reject.fail(|| rejection.message),
            },
            "match:pattern" => self.confirm_pattern(specimen, reject),
            "match:kind" => self.confirm_kind(specimen, payload.as_str().unwrap_or_default(), reject),
            "match:tagged" => {
                let Some(tagged) = specimen.as_tagged() else {
                    return reject.fail(|| {
                        format!(
                            "Expected tagged object, not {}: {}",
                            s(specimen.pass_style().name()),
                            quote(specimen)
                        )
                    });
                };
                let (tag_pattern, payload_pattern) = (items.first(), items.get(1));
                self.confirm_nested(
                    &Value::String(tagged.tag.clone()),
                    tag_pattern.unwrap_or(&Value::Undefined),
                    Label::Text("tag"),
                    reject,
                )?;
                self.confirm_nested(
                    &tagged.payload,
                    payload_pattern.unwrap_or(&Value::Undefined),
                    Label::Text("payload"),
                    reject,
                )
            }
            "match:bigint" => {
                self.confirm_kind(specimen, "bigint", reject)?;
                self.confirm_decimal_digits(specimen, limits_at(0).decimal_digits, reject)
            }
            "match:nat" => {
                self.confirm_kind(specimen, "bigint", reject)?;
                if specimen.as_bigint().is_some_and(Signed::is_negative) {
                    return reject.fail(|| format!("{} - Must be non-negative", quote(specimen)));
                }
                self.confirm_decimal_digits(specimen, limits_at(0).decimal_digits, reject)
            }
            "match:string" => {
                self.confirm_kind(specimen, "string", reject)?;
                let limit = limits_at(0).string_length;
                if utf16_len(specimen.as_str().unwrap_or_default()) as f64 <= limit {
                    Ok(())
                } else {
                    reject.fail(|| format!("string {} must not be bigger than {}", quote(specimen), number(limit)))
                }
            }
            "match:symbol" => {
                self.confirm_kind(specimen, "symbol", reject)?;
                let limit = limits_at(0).symbol_name_length;
                let Value::Symbol(name) = specimen else {
                    return reject.fail(String::new);
                };
                if utf16_len(name) as f64 <= limit {
                    Ok(())
                } else {
                    reject.fail(|| format!("Symbol name {} must not be bigger than {}", s(name), number(limit)))
                }
            }
            "match:byteArray" => {
                self.confirm_kind(specimen, "byteArray", reject)?;
                let limit = limits_at(0).byte_length;
                let Value::ByteArray(bytes) = specimen else {
                    return reject.fail(String::new);
                };
                if bytes.len() as f64 <= limit {
                    Ok(())
                } else {
                    reject.fail(|| {
                        format!(
                            "byteArray {} must not be bigger than {}",
                            quote(specimen),
                            number(limit)
                        )
                    })
                }
            }
            "match:remotable" | "match:promise" => {
                let wanted = if tag == "match:remotable" {
                    "remotable"
                } else {
                    "promise"
                };
                if self.is_kind(specimen, wanted)? {
                    return Ok(());
                }
                let label = payload
                    .as_record()
                    .and_then(|record| record.get("label"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                reject.fail(|| {
                    let kind_details = match specimen.as_tagged() {
                        Some(tagged) => s(&tagged.tag),
                        None => bare(specimen.pass_style().name()),
                    };
                    format!(
                        "{} - Must be a {wanted} {}, not {kind_details}",
                        quote(specimen),
                        bare(&label)
                    )
                })
            }
            "match:lt" | "match:lte" | "match:gte" | "match:gt" => {
                let order = compare_keys(specimen, payload)?;
                let (ok, operator) = match tag {
                    "match:lt" => (order == KeyOrder::Less, "<"),
                    "match:lte" => (matches!(order, KeyOrder::Less | KeyOrder::Equal), "<="),
                    "match:gte" => (matches!(order, KeyOrder::Greater | KeyOrder::Equal), ">="),
                    _ => (order == KeyOrder::Greater, ">"),
                };
                if ok {
                    Ok(())
                } else {
                    reject.fail(|| format!("{} - Must be {operator} {}", quote(specimen), quote(payload)))
                }
            }
            "match:recordOf" => self.match_record_of(specimen, items, limits_at(2), reject),
            "match:arrayOf" => {
                self.confirm_kind(specimen, "copyArray", reject)?;
                let elements = specimen.as_array().unwrap_or_default();
                let limit = limits_at(1).array_length;
                if elements.len() as f64 > limit {
                    return reject
                        .fail(|| format!("Array length {} must be <= limit {}", elements.len(), number(limit)));
                }
                self.confirm_every_element(elements, items.first(), "", reject)
            }
            "match:setOf" => {
                let limit = limits_at(1).num_set_elements;
                let elements = match collection_of(specimen) {
                    Some(CopyCollection::Set(elements)) => elements,
                    _ => &[],
                };
                // Endo requires strictly fewer elements than the limit.
                if self.confirm_kind(specimen, "copySet", reject).is_err() || elements.len() as f64 >= limit {
                    self.confirm_kind(specimen, "copySet", reject)?;
                    return reject.fail(|| {
                        format!(
                            "Set must not have more than {} elements: {}",
                            number(limit),
                            elements.len()
                        )
                    });
                }
                self.confirm_every_element(elements, items.first(), "set elements", reject)
            }
            "match:bagOf" => self.match_bag_of(specimen, items, limits_at(2), reject),
            "match:mapOf" => {
                self.confirm_kind(specimen, "copyMap", reject)?;
                let Some(CopyCollection::Map { keys, values }) = collection_of(specimen) else {
                    return reject.fail(String::new);
                };
                let limit = limits_at(2).num_map_entries;
                if keys.len() as f64 > limit {
                    return reject.fail(|| {
                        format!(
                            "CopyMap must have no more than {} entries: {}",
                            number(limit),
                            quote(specimen)
                        )
                    });
                }
                self.confirm_every_element(keys, items.first(), "map keys", reject)?;
                self.confirm_every_element(values, items.get(1), "map values", reject)
            }
            "match:containerHas" => self.match_container_has(specimen, items, limits_at(2), reject),
            "match:splitArray" => self.match_split_array(specimen, items, reject),
            "match:splitRecord" => self.match_split_record(specimen, items, reject),
            _ => Err(Failure::Thrown(format!("internal: should have recognized {} ", s(tag)))),
        }
    }

    fn match_or(&self, specimen: &Value, payload: &Value, patterns: &[Value], reject: Reject) -> Outcome {
        if patterns.is_empty() {
            return reject.fail(|| format!("{} - no pattern disjuncts to match: {}", quote(specimen), qp(payload)));
        }
        if patterns.len() == 2 {
            // `M.opt(p)`: report the inner pattern's message.
            for (index, other) in [(0, 1), (1, 0)] {
                if self.is_undefined_pattern(&patterns[index])? {
                    return if specimen.is_undefined() {
                        Ok(())
                    } else {
                        self.confirm_matches(specimen, &patterns[other], reject)
                    };
                }
            }
        }
        for pattern in patterns {
            if self.matches(specimen, pattern)? {
                return Ok(());
            }
        }
        reject.fail(|| format!("{} - Must match one of {}", quote(specimen), qp(payload)))
    }

    fn confirm_decimal_digits(&self, specimen: &Value, limit: f64, reject: Reject) -> Outcome {
        let Some(n) = specimen.as_bigint() else {
            return reject.fail(String::new);
        };
        if decimal_digits_as_endo_counts(n) <= limit {
            Ok(())
        } else {
            reject.fail(|| {
                format!(
                    "bigint {} must not have more than {} digits",
                    quote(specimen),
                    number(limit)
                )
            })
        }
    }

    fn confirm_every_element(
        &self,
        elements: &[Value],
        pattern: Option<&Value>,
        label_prefix: &str,
        reject: Reject,
    ) -> Outcome {
        let pattern = pattern.unwrap_or(&Value::Undefined);
        if self.is_kind(pattern, "match:any")? {
            return Ok(());
        }
        for (index, element) in elements.iter().enumerate() {
            let label = if label_prefix.is_empty() {
                Label::Index(index)
            } else {
                Label::Element(label_prefix, index)
            };
            self.confirm_nested(element, pattern, label, reject)?;
        }
        Ok(())
    }

    fn match_record_of(&self, specimen: &Value, items: &[Value], limits: Limits, reject: Reject) -> Outcome {
        self.confirm_kind(specimen, "copyRecord", reject)?;
        let Some(record) = specimen.as_record() else {
            return reject.fail(String::new);
        };
        if record.len() as f64 > limits.num_properties {
            return reject.fail(|| {
                format!(
                    "Must not have more than {} properties: {}",
                    number(limits.num_properties),
                    quote(specimen)
                )
            });
        }
        let entry_pattern = list![
            items.first().cloned().unwrap_or(Value::Undefined),
            items.get(1).cloned().unwrap_or(Value::Undefined)
        ];
        for (name, value) in crate::quote::js_property_order(record) {
            if utf16_len(name) as f64 > limits.property_name_length {
                return nested(Label::Text(name), || {
                    reject.fail_thrown(|| {
                        format!(
                            "Property name must not be longer than {}",
                            number(limits.property_name_length)
                        )
                    })
                });
            }
            let entry = list![name, value.clone()];
            self.confirm_nested(&entry, &entry_pattern, Label::Text(name), reject)?;
        }
        Ok(())
    }

    fn match_bag_of(&self, specimen: &Value, items: &[Value], limits: Limits, reject: Reject) -> Outcome {
        let entries = match collection_of(specimen) {
            Some(CopyCollection::Bag(entries)) => Some(entries),
            _ => None,
        };
        let within_limit = entries.is_some_and(|entries| entries.len() as f64 <= limits.num_unique_bag_elements);
        if !within_limit {
            self.confirm_kind(specimen, "copyBag", reject)?;
            return reject.fail(|| {
                format!(
                    "Bag must not have more than {} unique elements: {}",
                    number(limits.num_unique_bag_elements),
                    quote(specimen)
                )
            });
        }
        let (key_pattern, count_pattern) = (
            items.first().unwrap_or(&Value::Undefined),
            items.get(1).unwrap_or(&Value::Undefined),
        );
        for (index, (key, count)) in entries.iter().flat_map(|entries| entries.iter()).enumerate() {
            self.confirm_nested(key, key_pattern, Label::Element("bag keys", index), reject)?;
            let count = Value::bigint(count.clone());
            nested(Label::Element("bag counts", index), || {
                self.confirm_decimal_digits(&count, limits.decimal_digits, reject)?;
                self.confirm_matches(&count, count_pattern, reject)
            })?;
        }
        Ok(())
    }

    fn match_container_has(&self, specimen: &Value, items: &[Value], limits: Limits, reject: Reject) -> Outcome {
        self.confirm_kind_of(specimen, reject)?;
        let bound_value = items.get(1).cloned().unwrap_or(Value::Undefined);
        self.confirm_decimal_digits(&bound_value, limits.decimal_digits, reject)?;
        let bound = bound_value.as_bigint().cloned().unwrap_or_else(BigInt::zero);
        let element_pattern = items.first().unwrap_or(&Value::Undefined);
        let mut found = BigInt::zero();
        match (kind_of(specimen), collection_of(specimen)) {
            (Some(Kind::Style(PassStyle::CopyArray)), _) => {
                for element in specimen.as_array().unwrap_or_default() {
                    if found >= bound {
                        break;
                    }
                    if self.matches(element, element_pattern)? {
                        found += 1;
                    }
                }
            }
            (_, Some(CopyCollection::Set(elements))) => {
                for element in elements.iter().rev() {
                    if found >= bound {
                        break;
                    }
                    if self.matches(element, element_pattern)? {
                        found += 1;
                    }
                }
            }
            (_, Some(CopyCollection::Bag(entries))) => {
                let pairs: Vec<_> = entries.iter().collect();
                for (element, count) in pairs.into_iter().rev() {
                    let still_needed = &bound - &found;
                    if !still_needed.is_positive() {
                        break;
                    }
                    if self.matches(element, element_pattern)? {
                        found += count.min(&still_needed).clone();
                    }
                }
            }
            (kind, _) => {
                let kind_name = kind.map(|kind| kind.name());
                return reject.fail(|| format!("unexpected {}", kind_name.map_or("\"[undefined]\"".to_string(), s)));
            }
        }
        if found >= bound {
            Ok(())
        } else {
            reject.fail(|| {
                format!(
                    "Has only {} matches, but needs {}",
                    quote(&Value::bigint(found.clone())),
                    quote(&bound_value)
                )
            })
        }
    }

    fn match_split_array(&self, specimen: &Value, items: &[Value], reject: Reject) -> Outcome {
        self.confirm_kind(specimen, "copyArray", reject)?;
        let elements = specimen.as_array().unwrap_or_default();
        let required = items.first().and_then(Value::as_array).unwrap_or_default();
        let optional = items.get(1).and_then(Value::as_array).unwrap_or_default();
        let any = M::any();
        let rest = match items.get(2) {
            None | Some(Value::Undefined) => &any,
            Some(rest) => rest,
        };
        if elements.len() < required.len() {
            return reject.fail(|| format!("Expected at least {} arguments: {}", required.len(), quote(specimen)));
        }
        let mut argument = 0;
        for (element, pattern) in elements.iter().zip(required) {
            self.confirm_nested(element, pattern, Label::Arg(argument), reject)?;
            argument += 1;
        }
        let optional_given = &elements[required.len()..elements.len().min(required.len() + optional.len())];
        for (element, pattern) in optional_given.iter().zip(optional) {
            self.confirm_nested(element, &M::opt(pattern.clone()), Label::OptionalArg(argument), reject)?;
            argument += 1;
        }
        let rest_elements = Value::array(elements.iter().skip(required.len() + optional.len()).cloned());
        self.confirm_nested(&rest_elements, rest, Label::Text("...rest"), reject)
    }

    fn match_split_record(&self, specimen: &Value, items: &[Value], reject: Reject) -> Outcome {
        self.confirm_kind(specimen, "copyRecord", reject)?;
        let record = specimen.as_record().cloned().unwrap_or_default();
        let empty = Record::default();
        let required = items.first().and_then(Value::as_record).unwrap_or(&empty);
        let optional = match items.get(1) {
            Some(Value::Record(optional)) => optional.as_ref(),
            _ => &empty,
        };
        let any = M::any();
        let rest = match items.get(2) {
            None | Some(Value::Undefined) => &any,
            Some(rest) => rest,
        };
        let mut required_part: Vec<(Arc<str>, Value)> = Vec::new();
        let mut optional_part: Vec<(&str, &Value)> = Vec::new();
        let mut rest_part: Vec<(Arc<str>, Value)> = Vec::new();
        for (name, value) in crate::quote::js_property_order(&record) {
            if required.contains(name) {
                required_part.push((name.into(), value.clone()));
            } else if optional.contains(name) {
                optional_part.push((name, value));
            } else {
                rest_part.push((name.into(), value.clone()));
            }
        }
        self.confirm_matches(
            &Value::record(required_part),
            items.first().unwrap_or(&Value::Undefined),
            reject,
        )?;
        for (name, value) in optional_part {
            let pattern = M::opt(optional.get(name).cloned().unwrap_or(Value::Undefined));
            self.confirm_nested(value, &pattern, Label::OptionalName(name), reject)?;
        }
        self.confirm_nested(&Value::record(rest_part), rest, Label::Text("...rest"), reject)
    }
}

/// The digit count Endo computes: `floor(log10(|Number(n)|)) + 1`, in
/// floating point (so huge values count as infinitely many digits).
fn decimal_digits_as_endo_counts(n: &BigInt) -> f64 {
    let approximate = n.abs().to_f64().unwrap_or(f64::INFINITY);
    approximate.log10().floor() + 1.0
}
