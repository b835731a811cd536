//! Limits: Endo's default size limits, overridable per pattern by a
//! limits record, and the nesting bound checked before any matching.

use crate::value::Value;

/// Endo's default limits, overridable per pattern by a limits record.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub decimal_digits: f64,
    pub string_length: f64,
    pub symbol_name_length: f64,
    pub num_properties: f64,
    pub property_name_length: f64,
    pub array_length: f64,
    pub byte_length: f64,
    pub num_set_elements: f64,
    pub num_unique_bag_elements: f64,
    pub num_map_entries: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            decimal_digits: 100.0,
            string_length: 100_000.0,
            symbol_name_length: 100.0,
            num_properties: 80.0,
            property_name_length: 100.0,
            array_length: 10_000.0,
            byte_length: 100_000.0,
            num_set_elements: 10_000.0,
            num_unique_bag_elements: 10_000.0,
            num_map_entries: 5_000.0,
        }
    }
}

impl Limits {
    /// The defaults overridden by the numbers in a limits record. Names
    /// that are not limits are ignored, as in Endo.
    pub(super) fn from_record(limits: Option<&Value>) -> Limits {
        let mut result = Limits::default();
        let Some(record) = limits.and_then(Value::as_record) else {
            return result;
        };
        for (name, value) in record.iter() {
            let Value::Number(n) = value else { continue };
            let slot = match &**name {
                "decimalDigitsLimit" => &mut result.decimal_digits,
                "stringLengthLimit" => &mut result.string_length,
                "symbolNameLengthLimit" => &mut result.symbol_name_length,
                "numPropertiesLimit" => &mut result.num_properties,
                "propertyNameLengthLimit" => &mut result.property_name_length,
                "arrayLengthLimit" => &mut result.array_length,
                "byteLengthLimit" => &mut result.byte_length,
                "numSetElementsLimit" => &mut result.num_set_elements,
                "numUniqueBagElementsLimit" => &mut result.num_unique_bag_elements,
                "numMapEntriesLimit" => &mut result.num_map_entries,
                _ => continue,
            };
            *slot = *n;
        }
        result
    }
}

/// How deep a pattern or specimen may nest before matching refuses it.
pub const DEFAULT_MAX_NESTING: usize = 64;

/// Whether a value nests deeper than `max` containers, checked without
/// recursion so that hostile depth cannot overflow the stack.
pub fn nesting_exceeds(value: &Value, max: usize) -> bool {
    fn is_container(value: &Value) -> bool {
        matches!(value, Value::Array(_) | Value::Record(_) | Value::Tagged(_))
    }
    // Most values hold no nested container: they are checked without
    // allocating (the stack is only made once a container is pushed), and
    // a value that is no container at all without any setup.
    if !is_container(value) {
        return false;
    }
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    let mut next = Some((value, 0));
    while let Some((value, depth)) = next.take().or_else(|| stack.pop()) {
        let children: &mut dyn Iterator<Item = &Value> = match value {
            Value::Array(items) => &mut items.iter(),
            Value::Record(record) => &mut record.values(),
            Value::Tagged(tagged) => &mut std::iter::once(&tagged.payload),
            _ => continue,
        };
        for child in children {
            if depth + 1 > max {
                return true;
            }
            if is_container(child) {
                stack.push((child, depth + 1));
            }
        }
    }
    false
}
